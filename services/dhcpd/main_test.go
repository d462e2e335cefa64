package dhcpd_test

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine started by a test (a listener, a watch, a lease writer)
// outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
