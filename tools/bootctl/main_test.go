package main

import (
	"os"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"go.uber.org/goleak"
)

// TestMain checks that no command leaves a goroutine behind (a watch that
// does not end, a connection not closed).
func TestMain(m *testing.M) {
	// No client config of the developer's (bootchain up writes one) reaches the
	// tests: they give every address themselves.
	os.Unsetenv("BOOTCHAIN_CONFIG")
	os.Setenv("XDG_CONFIG_HOME", "/nonexistent/bootctl-tests")
	testkit.VerifyTestMain(m,
		// The embedded etcd server's own workers, which may still be winding
		// down when the last test's cleanup returns.
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/server/v3/etcdserver.(*raftNode).start.func1"),
		goleak.IgnoreTopFunction("go.etcd.io/bbolt.(*DB).freePages"),
	)
}
