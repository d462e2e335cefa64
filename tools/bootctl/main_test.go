package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no command leaves a goroutine behind (a watch that
// does not end, a connection not closed).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's client and embedded server keep package-level goroutines.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/pkg/v3/logutil.init"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/server/v3/etcdserver.(*raftNode).start.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("go.etcd.io/bbolt.(*DB).freePages"),
		// fasthttp (bootapi, artifactstore) keeps its Date header's clock in a
		// package-level goroutine, and a server's idle-worker cleaner sleeps
		// before it sees that the server stopped.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}
