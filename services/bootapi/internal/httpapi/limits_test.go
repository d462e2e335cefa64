package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/valyala/fasthttp"
)

func serveFast(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go srv.Serve(Listener(l))
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + l.Addr().String()
}

func getFrom(t *testing.T, ip, url string) (int, http.Header) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// An HTTP flood from one IP gets 429 with Retry-After past its burst, counted;
// another IP is still answered.
func TestHTTPFloodOneIP(t *testing.T) {
	lim := ratelimit.New[netip.Addr](ratelimit.Config{Limit: ratelimit.Limit{Rate: 1e-6, Burst: 5}})
	ok := func(rc *fasthttp.RequestCtx) { rc.SetBodyString("ok\n") }
	url := serveFast(t, Limit(ok, lim)) + "/boot.ipxe"
	codes := map[int]int{}
	for i := 0; i < 20; i++ {
		code, hdr := getFrom(t, "127.0.0.1", url)
		codes[code]++
		if code == http.StatusTooManyRequests && hdr.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[200] != 5 || codes[429] != 15 || lim.Limited.Load() != 15 {
		t.Fatalf("answers %v, %d limited; want 5 x 200, 15 x 429", codes, lim.Limited.Load())
	}
	if code, _ := getFrom(t, "127.0.0.2", url); code != 200 {
		t.Fatalf("another IP during the flood: %d", code)
	}
}

// A panic in a request is answered 500, counted, and the server goes on.
func TestHTTPPanicRecovered(t *testing.T) {
	testHook = func(rc *fasthttp.RequestCtx) {
		if string(rc.Path()) == "/panic" {
			panic("forced by the test")
		}
	}
	t.Cleanup(func() { testHook = nil })
	h := &Handler{log: slog.New(slog.DiscardHandler)}
	base := serveFast(t, h.RequestHandler(context.Background()))
	if code, _ := getFrom(t, "127.0.0.1", base+"/panic"); code != 500 {
		t.Fatalf("request that panicked: %d, want 500", code)
	}
	if code, _ := getFrom(t, "127.0.0.1", base+"/nothing-here"); code != 404 {
		t.Fatalf("after the panic: %d, want 404", code)
	}
	if h.Panics.Load() != 1 {
		t.Fatalf("Panics = %d, want 1", h.Panics.Load())
	}
}
