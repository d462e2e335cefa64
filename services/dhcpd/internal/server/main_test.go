package server

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine started by a test (a socket reader, a pacer)
// outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
