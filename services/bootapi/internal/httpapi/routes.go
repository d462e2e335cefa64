package httpapi

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/valyala/fasthttp"
)

// MaxBodySize bounds a request body (a report's form): the server's
// MaxRequestBodySize, since fasthttp reads the body before calling the handler.
// A larger one gets ReadError's 413.
const MaxBodySize = 64 << 10

// RequestHandler routes requests as net/http's ServeMux did with "GET /boot.ipxe"
// style patterns: GET routes also answer HEAD, a known path with another method is
// a 405 naming the allowed ones, anything else a 404.
//
// base is the context of the requests' work (sessions, spans, etcd): a
// RequestCtx's own Done only closes when the server starts shutting down, which
// would cut off the requests that a graceful shutdown lets finish. A request lives
// for its handler call; nothing it starts outlives that.
func (h *Handler) RequestHandler(base context.Context) fasthttp.RequestHandler {
	return func(rc *fasthttp.RequestCtx) {
		defer h.recoverPanic(rc)
		if testHook != nil {
			testHook(rc)
		}
		get := rc.IsGet() || rc.IsHead()
		// iPXE's requests for a script name the path as it is: route them on the
		// raw request line. Parsing and normalizing the URI (what rc.Path does) is
		// a tenth of the script path's CPU; anything else takes that way.
		if q, ok := configQuery(rc.RequestURI()); ok && get {
			h.config(base, rc, q)
			return
		}
		path := rc.Path()
		if bytes.HasPrefix(path, []byte(installerPrefix)) {
			if get {
				h.installerFile(base, rc)
				return
			}
			methodNotAllowed(rc, "GET, HEAD")
			return
		}
		switch string(path) {
		case "/boot.ipxe":
			if get {
				h.bootstrap(rc)
				return
			}
		case configPath:
			if get {
				h.config(base, rc, rc.URI().QueryString())
				return
			}
		case "/ipxe/v1/report":
			if rc.IsPost() {
				h.report(base, rc)
				h.metrics.callback(rc.Response.StatusCode())
				return
			}
			methodNotAllowed(rc, "POST")
			return
		case "/healthz", "/readyz":
			// Both say ready: /healthz always has (tests and tools wait on
			// it), /readyz is the name probes look for. A liveness probe wants
			// neither to fail while the caches load: give it a start delay.
			if get {
				h.healthz(base, rc)
				return
			}
		case "/metrics":
			if h.metricsHandler != nil {
				if get {
					h.metricsHandler(rc)
					return
				}
			} else {
				httpError(rc, "404 page not found", fasthttp.StatusNotFound)
				return
			}
		default:
			if p := rc.Path(); h.cfg.UI != nil && bytes.HasPrefix(p, []byte("/ui")) && (len(p) == 3 || p[3] == '/') {
				h.cfg.UI(base, rc)
				return
			}
			httpError(rc, "404 page not found", fasthttp.StatusNotFound)
			return
		}
		methodNotAllowed(rc, "GET, HEAD")
	}
}

// Limit wraps next with l, a per-client-IP request limit: a client over it gets
// 429 with Retry-After (and counts in l.Limited) before any routing or work.
// Behind a relay or NAT many machines share one address; see docs/bootapi.md
// for sizing.
func Limit(next fasthttp.RequestHandler, l *ratelimit.Limiter[netip.Addr]) fasthttp.RequestHandler {
	if l == nil || l.Limit().Off() {
		return next
	}
	return func(rc *fasthttp.RequestCtx) {
		if ok, wait := l.Allow(remoteAddr(rc)); !ok {
			httpError(rc, "too many requests from this address; retry later", fasthttp.StatusTooManyRequests)
			rc.Response.Header.Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			return
		}
		next(rc)
	}
}

// configPath is the script endpoint's path.
const configPath = "/ipxe/v1/config"

// configQuery returns the query of a request line's URI that names configPath
// exactly (an origin-form URI: the path, then "?" or nothing), as fasthttp's
// URI.QueryString would: up to a "#". Any other spelling of the path, and a URI
// with a control byte (which fasthttp refuses), reports false and is routed
// after normalizing.
func configQuery(uri []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(uri, []byte(configPath))
	if !ok || (len(rest) > 0 && rest[0] != '?') {
		return nil, false
	}
	for _, c := range rest {
		if c < 0x20 || c == 0x7f {
			return nil, false
		}
	}
	if len(rest) > 0 {
		rest = rest[1:]
	}
	if i := bytes.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i]
	}
	return rest, true
}

// testHook, when set (by tests, before serving), runs first in every request.
var testHook func(*fasthttp.RequestCtx)

// recoverPanic keeps a handler's panic to its request, as net/http did; in
// fasthttp it would end the process (with, in bootchain up, etcd and every service).
func (h *Handler) recoverPanic(rc *fasthttp.RequestCtx) {
	p := recover()
	if p == nil {
		return
	}
	h.Panics.Add(1)
	h.log.Error("panic serving HTTP", "path", loggedPath(rc.Path()), "panic", p, "stack", string(debug.Stack()))
	httpError(rc, "bootapi failed on this request; see its log", fasthttp.StatusInternalServerError)
	rc.SetConnectionClose()
}

// ReadError answers a request the server could not read (fasthttp.Server's
// ErrorHandler) with fasthttp's default codes; a body over MaxBodySize is a 413
// naming the body, where fasthttp would say 400.
func ReadError(rc *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var nerr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		httpError(rc, "body: larger than "+strconv.Itoa(MaxBodySize)+" bytes", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &small):
		httpError(rc, "request header: too large", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.As(err, &nerr) && nerr.Timeout():
		httpError(rc, "request not received in time", fasthttp.StatusRequestTimeout)
	default:
		httpError(rc, "malformed request", fasthttp.StatusBadRequest)
	}
}

// httpError answers as net/http's http.Error did: the message and a newline as
// plain text.
func httpError(rc *fasthttp.RequestCtx, msg string, code int) {
	rc.Error(msg, code)
	rc.Response.AppendBodyString("\n")
	rc.Response.Header.Set("X-Content-Type-Options", "nosniff")
}

// RetryAfter is what a 503 asks a client to wait before it retries.
const RetryAfter = 10 * time.Second

// unavailable answers 503 with Retry-After: nothing was recorded, retry.
func unavailable(rc *fasthttp.RequestCtx, msg string) {
	httpError(rc, msg, fasthttp.StatusServiceUnavailable)
	rc.Response.Header.Set("Retry-After", strconv.Itoa(int(RetryAfter/time.Second)))
}

func (h *Handler) offline() bool { return h.cfg.Offline != nil && h.cfg.Offline() }

func methodNotAllowed(rc *fasthttp.RequestCtx, allow string) {
	httpError(rc, "Method Not Allowed", fasthttp.StatusMethodNotAllowed)
	rc.Response.Header.Set("Allow", allow)
}

func (h *Handler) healthz(base context.Context, rc *fasthttp.RequestCtx) {
	ctx, cancel := context.WithTimeout(base, 50*time.Millisecond)
	defer cancel()
	if err := h.cfg.State.WaitReady(ctx); err != nil {
		httpError(rc, "caches loading", fasthttp.StatusServiceUnavailable)
		return
	}
	rc.SetContentType(textPlain)
	rc.SetBodyString("ok\n")
}

func (h *Handler) bootstrap(rc *fasthttp.RequestCtx) {
	s, err := script.Bootstrap(h.renderer(rc).ConfigURL())
	if err != nil {
		h.log.Error("bootstrap script", "err", err)
		httpError(rc, "cannot render bootstrap", fasthttp.StatusInternalServerError)
		return
	}
	writeScript(rc, s)
}

const textPlain = "text/plain; charset=utf-8"

// The scripts' Cache-Control header, in canonical form (no normalizing per
// request).
var cacheControl, noStore = []byte("Cache-Control"), []byte("no-store")

// writeScript sends a script as parts (a cached menu head and body go out without
// being joined first); fasthttp copies them into the response's pooled buffer and
// sets Content-Length.
func writeScript(rc *fasthttp.RequestCtx, parts ...string) {
	rc.SetContentType(textPlain)
	rc.Response.Header.SetCanonical(cacheControl, noStore)
	for _, p := range parts {
		rc.Response.AppendBodyString(p)
	}
}
