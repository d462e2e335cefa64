package store_test

import (
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

// TestMain fails the package when a goroutine started by a test (a cache's
// watch, an embedded etcd) outlives it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
