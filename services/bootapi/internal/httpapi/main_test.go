package httpapi

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine a test started (a server, a
// watch, a writer) outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
