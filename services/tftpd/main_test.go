package tftpd_test

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine started by a test (a transfer, a
// listener, a watch) outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
