// Package testkit is what bootchain's tests share: waiting for a condition
// instead of sleeping, running a service for the length of one test, and the
// goroutine-leak check every server package runs in its TestMain.
//
//	func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
//
//	func TestSomething(t *testing.T) {
//		srv, _ := tftpd.New(cfg)
//		svc := testkit.Run(t, "tftpd", srv.Run) // canceled and waited for in Cleanup
//		testkit.WaitHTTP(t, "http://"+addr+"/healthz")
//		testkit.Eventually(t, "the transfer to end", func() bool { return srv.Stats().GetActive() == 0 })
//		svc.Stop() // stop early, e.g. to restart on the same data
//	}
//
// An embedded etcd for a test is pkg/store/storetest.
package testkit
