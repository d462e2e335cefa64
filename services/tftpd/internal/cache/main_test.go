package cache

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine started by a test (a refresh, a
// fetch from the artifact source) outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
