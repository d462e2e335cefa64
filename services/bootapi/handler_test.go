package bootapi_test

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/ratelimit"
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
	// Every request comes from one client address: no per-IP limit.
	cfg.HTTPLimitPerIP = ratelimit.Limit{}
	srv, err := bootapi.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	testkit.Run(tb, "bootapi", srv.Run)
	h := srv.Handler()
	var req fasthttp.Request
	req.SetRequestURI("/healthz")
	testkit.Eventually(tb, "bootapi ready", func() bool {
		var rc fasthttp.RequestCtx
		serve(h, &rc, &req)
		return rc.Response.StatusCode() == fasthttp.StatusOK
	})
	return h, st
}

// client is where the requests that serve sends come from.
var client = &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 41000}

// serve runs req through h in rc as fasthttp's server would, without a socket.
func serve(h fasthttp.RequestHandler, rc *fasthttp.RequestCtx, req *fasthttp.Request) {
	rc.Init(req, client, nil)
	h(rc)
}
