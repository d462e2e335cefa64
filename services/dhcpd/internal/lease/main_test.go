package lease

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine started by a test (a watch, a batch writer)
// outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
