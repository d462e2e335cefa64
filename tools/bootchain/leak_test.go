package main

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine a test started (a service the
// launcher ran, a watch) outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
