// Package testkit is what bootchain's tests share: waiting for a condition
// instead of sleeping, running a service for the length of one test, and the
// goroutine-leak check every server package runs in its TestMain.
//
//	func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
//
//	func TestSomething(t *testing.T) {
//		srv, err := artifactstore.New(cfg)
//		...
//		svc := testkit.Run(t, "artifactstore", srv.Run) // canceled and waited for in Cleanup
//		testkit.WaitHTTP(t, "http://"+srv.HTTPAddr().String()+"/healthz")
//		testkit.Eventually(t, "the blob to go", func() bool { return len(blobs(t)) == 0 })
//		svc.Stop() // stop early, e.g. to restart on the same data
//	}
//
// An embedded etcd for a test is pkg/store/storetest.
package testkit
