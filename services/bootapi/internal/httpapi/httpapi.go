// Package httpapi serves bootapi's HTTP endpoints for iPXE and installers:
//
//	GET  /boot.ipxe           bootstrap: chain to the config URL with the machine's facts
//	GET  /ipxe/v1/config      the script for one machine (job, default action, menu)
//	POST /ipxe/v1/report      installer callbacks (running, succeeded, failed); also over HTTPS
//	GET  /healthz             200 once the caches are loaded
//	GET  /readyz              the same (the probes' conventional name)
//	GET  /metrics             Prometheus metrics (Config.Metrics)
//	     /ui/...              the dashboard (Config.UI)
//
// What a machine boots is package decide's choice, rendered by package script;
// this package executes the choice: it dispatches a job (the one etcd write on
// the script path, a compare-and-swap), records the request on the machine's
// boot session and queues its sighting.
//
// The server is fasthttp, not net/http: net/http's per-request work (parsing into a
// Request, header maps, the ResponseWriter, their allocations) was about a third of
// bootapi's CPU per script. fasthttp speaks HTTP/1.x only, which is what iPXE and
// installers use; the answers (codes, texts, headers, HEAD, 405 with Allow) are
// those net/http gave, except that a body over MaxBodySize is a 413. fasthttp
// reuses a request's buffers once its handler returns, so nothing kept from a
// request may point into them.
package httpapi

import (
	"context"
	"log/slog"
	"net/netip"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/services/bootapi/internal/grubcfg"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// Config configures the handler.
type Config struct {
	State    *state.State
	Sessions *session.Recorder
	// PublicURL is bootapi's base URL as machines reach it.
	PublicURL *url.URL
	// CallbackURL is the base URL put on a job's kernel command line for its
	// reports (the HTTPS listener's, when there is one); default PublicURL.
	CallbackURL *url.URL
	// ArtifactURL is the artifactstore base URL for sites that set none.
	ArtifactURL string
	// DefaultSite for machines that name none.
	DefaultSite string
	// DefaultAction when neither the machine nor its site sets one.
	DefaultAction bootapiv1.Action
	// MenuTimeout before the menu boots the local disk.
	MenuTimeout time.Duration
	Logger      *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Audit records dispatches and callbacks; nil: none.
	Audit *audit.Log
	// Metrics is served on GET /metrics; nil: 404.
	Metrics prometheus.Gatherer
	// UI serves the dashboard's requests, everything under /ui (package ui,
	// which authenticates them); nil: 404.
	UI func(base context.Context, rc *fasthttp.RequestCtx)
	// Offline reports that etcd cannot commit (store.Reach): pending jobs are
	// withheld and reports answered 503 (docs/bootapi.md, "Cut off from
	// etcd"); nil: always online.
	Offline func() bool
	// Admission caps each site's boots in flight; the zero value is off.
	Admission AdmissionConfig
	// Advertise6 is bootapi's IPv6 address as IPv6 clients reach it: their
	// scripts name URLs on it (script.Renderer.ForIPv6); invalid: IPv6
	// clients get the IPv4 URLs.
	Advertise6 netip.Addr
}

// Handler is the HTTP API.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	render *script.Renderer
	grub   *grubcfg.Renderer
	// render6 renders for clients that came over IPv6; nil without Advertise6.
	render6 *script.Renderer
	spans   bool // the session recorder exports hops as spans
	// What was answered, for bootapi's summary when it stops; Panics are
	// requests whose handler panicked (answered 500).
	Scripts, Dispatches, Reports, Rejected, Panics atomic.Int64
	// Withheld are pending jobs not dispatched because etcd was unreachable.
	Withheld  atomic.Int64
	metrics   *metrics
	admission *admission
	// metricsHandler serves Config.Metrics; nil without it.
	metricsHandler fasthttp.RequestHandler
}

// New returns the handler.
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st := cfg.State
	var mh fasthttp.RequestHandler
	if cfg.Metrics != nil {
		mh = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{}))
	}
	render := script.NewRenderer(script.RendererConfig{
		PublicURL: cfg.PublicURL, CallbackURL: cfg.CallbackURL, ArtifactURL: cfg.ArtifactURL, MenuTimeout: cfg.MenuTimeout, Profiles: st.Profiles,
	})
	h := &Handler{
		render:         render,
		grub:           grubcfg.NewRenderer(grubcfg.Config{Script: render, Profiles: st.Profiles, MenuTimeout: cfg.MenuTimeout}),
		metricsHandler: mh,
		cfg:            cfg, log: cfg.Logger, spans: cfg.Sessions.Spans(), metrics: newMetrics(),
		admission: newAdmission(cfg.Admission),
	}
	if cfg.Advertise6.Is6() {
		h.render6 = h.render.ForIPv6(cfg.Advertise6)
	}
	return h
}

// renderer is the renderer for the client of rc: IPv6 clients get URLs on
// bootchain's IPv6 address.
func (h *Handler) renderer(rc *fasthttp.RequestCtx) *script.Renderer {
	if h.render6 != nil && remoteAddr(rc).Is6() {
		return h.render6
	}
	return h.render
}

// rendererFor is renderer for a client address as remoteIP formats it.
func (h *Handler) rendererFor(ip string) *script.Renderer {
	if h.render6 != nil {
		if a, err := netip.ParseAddr(ip); err == nil && a.Unmap().Is6() {
			return h.render6
		}
	}
	return h.render
}
