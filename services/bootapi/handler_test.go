package bootapi_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
	"github.com/valyala/fasthttp"
)

// startHandler runs a bootapi on an embedded etcd for benchmarks and fuzz targets,
// which drive its HTTP handler directly (no sockets), and waits until it is ready.
// It stops when tb ends.
func startHandler(tb testing.TB) (fasthttp.RequestHandler, *store.Store) {
	tb.Helper()
	st := storetest.New(tb)
	cfg := bootapi.DefaultConfig()
	cfg.Store, cfg.HTTPAddr = st, "127.0.0.1:0"
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := bootapi.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	h := srv.Handler()
	var req fasthttp.Request
	req.SetRequestURI("/healthz")
	deadline := time.Now().Add(15 * time.Second)
	for {
		var rc fasthttp.RequestCtx
		serve(h, &rc, &req)
		if rc.Response.StatusCode() == fasthttp.StatusOK {
			return h, st
		}
		if time.Now().After(deadline) {
			tb.Fatal("bootapi not ready")
		}
		time.Sleep(10 * time.Millisecond) // polling for readiness, not waiting a fixed time
	}
}

// client is where the requests that serve sends come from.
var client = &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 41000}

// serve runs req through h in rc as fasthttp's server would, without a socket.
func serve(h fasthttp.RequestHandler, rc *fasthttp.RequestCtx, req *fasthttp.Request) {
	rc.Init(req, client, nil)
	h(rc)
}
