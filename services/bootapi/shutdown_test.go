package bootapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
)

// Stopping bootapi while machines fetch their scripts loses no hop: the HTTP
// server stops taking requests and finishes the ones in flight before the
// recorder's final flush, so every script answered is counted in etcd (as a
// hop or a repeat of one), as a later bootapi reads it.
func TestStopKeepsEveryAnsweredHop(t *testing.T) {
	st := storetest.New(t)
	first := start(t, st)
	macs := make([]string, 16)
	for i := range macs {
		macs[i] = fmt.Sprintf("52:54:00:00:01:%02x", i)
	}
	first.seed(t, macs...)

	cfg := bootapi.DefaultConfig()
	cfg.Store, cfg.HTTPAddr, cfg.GRPC = st, "127.0.0.1:0", grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	srv, err := bootapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	base := "http://" + srv.HTTPAddr().String()
	testkit.WaitHTTP(t, base+"/healthz")

	answered := make([]atomic.Int64, len(macs))
	var started, wg sync.WaitGroup
	started.Add(len(macs))
	for i, m := range macs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &http.Client{Transport: &http.Transport{}}
			defer cl.CloseIdleConnections()
			path := base + "/ipxe/v1/config?mac=" + m + "&arch=x86_64&platform=pcbios"
			for n := 0; n < 5000; n++ {
				if n == 20 {
					started.Done()
				}
				resp, err := cl.Get(path)
				if err != nil {
					return // the server stopped
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return
				}
				answered[i].Add(1)
			}
		}()
	}
	started.Wait() // every machine is fetching scripts
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	wg.Wait()

	// The first bootapi sees the second one's writes through its watch.
	for i, m := range macs {
		want := answered[i].Load()
		var counted int64
		testkit.Eventually(t, fmt.Sprintf("%s: %d scripts answered counted in etcd", m, want), func() bool {
			s, err := first.sessions.GetSession(context.Background(), &bootapiv1.GetSessionRequest{Mac: m})
			if err != nil {
				return false
			}
			counted = 0
			for _, h := range s.GetSession().GetHops() {
				if h.GetName() == "script" {
					counted += 1 + int64(h.GetRepeats())
				}
			}
			return counted >= want
		})
	}
}
