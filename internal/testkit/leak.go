package testkit

import (
	"testing"

	"go.uber.org/goleak"
)

// ignored are goroutines that outlive every test by design: package-level
// workers of libraries, started once per process, not by a server under test.
var ignored = []goleak.Option{
	// etcd's client and embedded server, and what they pull in.
	goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/pkg/v3/logutil.init"),
	goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	// fasthttp keeps the Date header's clock in a package-level goroutine, and a
	// server's idle-worker cleaner sleeps (MaxIdleWorkerDuration, 10 s) before it
	// sees that its server stopped.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
}

// VerifyTestMain runs the package's tests and then fails the package if any
// goroutine is left that the tests started (a listener, a watch, a transfer, a
// writer), beyond the library workers above and opts. Every package with a
// server calls it from TestMain.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, append(append([]goleak.Option{}, ignored...), opts...)...)
}

// VerifyNone fails t if goroutines other than the ignored ones are running,
// for a test that checks its own cleanup.
func VerifyNone(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, append(append([]goleak.Option{}, ignored...), opts...)...)
}
