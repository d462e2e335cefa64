// Package httpapi serves bootapi's HTTP endpoints for iPXE and installers:
//
//	GET  /boot.ipxe           bootstrap: chain to the config URL with the machine's facts
//	GET  /ipxe/v1/config      the script for one machine (job, default action, menu)
//	POST /ipxe/v1/report      installer callbacks (running, succeeded, failed)
//	GET  /healthz             200 once the caches are loaded
//
// The config path reads only from watch-fed caches; the one etcd write it may make
// is the transaction that moves a pending job to dispatched.
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
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/artifacturl"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/strhash"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/valyala/fasthttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config configures the handler.
type Config struct {
	State    *state.State
	Sessions *session.Recorder
	// PublicURL is bootapi's base URL as machines reach it.
	PublicURL *url.URL
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
}

// Handler is the HTTP API.
type Handler struct {
	cfg   Config
	log   *slog.Logger
	touch *toucher

	hot   [hotShards]hotShard
	spans bool // the session recorder exports hops as spans
	// menuR is the shared part of the menu as last rendered; menuMu serializes
	// rendering it again after the profiles changed.
	menuR  atomic.Pointer[menuRender]
	menuMu sync.Mutex
	// Counters for tests and metrics.
	Scripts, Dispatches, Reports, Rejected atomic.Int64
}

// New returns the handler; Run starts its background writer.
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultAction == bootapiv1.Action_ACTION_UNSPECIFIED {
		cfg.DefaultAction = bootapiv1.Action_ACTION_MENU
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, spans: cfg.Sessions.Spans()}
	for i := range h.hot {
		h.hot[i].m = map[uint64]*hotEntry{}
	}
	h.touch = newToucher(cfg.State, cfg.Logger, cfg.Now)
	cfg.State.Machines.OnEvent(h.onMachine)
	return h
}

// Run writes machine sightings, and hands the session the requests answered
// from memos (fast.go), until ctx ends.
func (h *Handler) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- h.runHandOver(ctx) }()
	err := h.touch.run(ctx)
	<-done
	return err
}

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
		get := rc.IsGet() || rc.IsHead()
		// iPXE's requests for a script name the path as it is: route them on the
		// raw request line. Parsing and normalizing the URI (what rc.Path does) is
		// a tenth of the script path's CPU; anything else takes that way.
		if q, ok := configQuery(rc.RequestURI()); ok && get {
			h.config(base, rc, q)
			return
		}
		switch string(rc.Path()) {
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
				return
			}
			methodNotAllowed(rc, "POST")
			return
		case "/healthz":
			if get {
				h.healthz(base, rc)
				return
			}
		default:
			httpError(rc, "404 page not found", fasthttp.StatusNotFound)
			return
		}
		methodNotAllowed(rc, "GET, HEAD")
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

// recoverPanic keeps a handler's panic to its request, as net/http did; in
// fasthttp it would end the process (with, in bootchain up, etcd and every service).
func (h *Handler) recoverPanic(rc *fasthttp.RequestCtx) {
	p := recover()
	if p == nil {
		return
	}
	h.log.Error("panic serving HTTP", "path", string(rc.Path()), "panic", p, "stack", string(debug.Stack()))
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

func (h *Handler) configURL() *url.URL { return h.cfg.PublicURL.JoinPath("ipxe", "v1", "config") }

func (h *Handler) bootstrap(rc *fasthttp.RequestCtx) {
	s, err := script.Bootstrap(h.configURL())
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

// facts reads what iPXE reported, bounded and stripped of anything unprintable.
func facts(q params, ip string) *bootapiv1.MachineFacts {
	clean := func(v string) string {
		if len(v) > 128 {
			v = v[:128]
		}
		return strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f || r == '\uFFFD' {
				return -1
			}
			return r
		}, v)
	}
	return &bootapiv1.MachineFacts{
		Arch: clean(q.arch), Platform: clean(q.platform), Uuid: clean(q.uuid), Serial: clean(q.serial),
		Manufacturer: clean(q.manufacturer), Product: clean(q.product), Ip: ip,
	}
}

// remoteIP is the client's address without the port, formatted once per
// connection when the server serves a Listener.
func remoteIP(rc *fasthttp.RequestCtx) string {
	if c, ok := rc.Conn().(*ipConn); ok {
		return c.ip
	}
	return hostOf(rc.RemoteAddr())
}

func hostOf(a net.Addr) string {
	s := a.String()
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return s
	}
	return host
}

// Listener wraps l so that each connection knows its client's IP as a string, as
// net/http's Request.RemoteAddr did (formatting it per request would allocate on
// the script path), and keeps its read deadline within DeadlineSlack of what
// the server asks instead of moving it on every request.
func Listener(l net.Listener) net.Listener { return ipListener{l} }

// DeadlineSlack is how much earlier than asked a connection's read deadline
// may stay where it is. fasthttp moves it twice per request (the idle timeout, then the
// read timeout), and each move re-arms a runtime timer: 4 % of the script
// path's CPU. With both timeouts equal, the moves between two requests are
// microseconds apart, and the deadline is re-armed about once per DeadlineSlack
// on a busy connection. A timeout then fires up to DeadlineSlack early; an
// earlier deadline is always armed at once.
const DeadlineSlack = time.Second

type ipListener struct{ net.Listener }

func (l ipListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &ipConn{Conn: c, ip: hostOf(c.RemoteAddr())}, nil
}

type ipConn struct {
	net.Conn
	ip string

	mu sync.Mutex
	// armed is the read deadline set on Conn (zero: none).
	armed time.Time
}

func (c *ipConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.IsZero() && !c.armed.IsZero() && !t.Before(c.armed) && t.Sub(c.armed) <= DeadlineSlack {
		return nil
	}
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	c.armed = t
	return nil
}

func (c *ipConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Conn.SetDeadline(t); err != nil {
		return err
	}
	c.armed = t
	return nil
}

// decision is what a machine boots and why.
type decision struct {
	// head, when set, goes out before script (the menu's per-machine title lines).
	head   string
	script string
	detail string
	jobID  string
	// final: the boot leaves bootchain here (local disk, shell, menu shown).
	final bool
}

// config answers a script request; query is its raw query string.
func (h *Handler) config(ctx context.Context, rc *fasthttp.RequestCtx, query []byte) {
	if h.fastPath(rc, query) {
		return
	}
	// One copy of the query: what is parsed from it (the MAC, the facts, the arch
	// on the span) outlives the request in the session, the sightings and the
	// exporter, while fasthttp reuses the request's bytes.
	raw := string(query)
	q := parseParams(raw)
	mac, err := macaddr.Normalize(q.mac)
	if err != nil {
		h.Rejected.Add(1)
		httpError(rc, "mac: "+err.Error(), fasthttp.StatusBadRequest)
		return
	}
	h.Scripts.Add(1)
	ip := remoteIP(rc)
	method := fasthttp.MethodGet
	if rc.IsHead() {
		method = fasthttp.MethodHead
	}
	start := h.cfg.Now()
	// The machine's entry mirrors its record in the cache: one read serves the
	// decision and the sighting.
	e := h.hotEntry(mac)
	mit, known, last := e.load()
	sess := h.cfg.Sessions.Open(ctx, mac, session.OpenOptions{IP: ip, Now: start, Last: last})
	if sess != last {
		e.setSession(sess)
	}
	// Requests the memo answered go to the session before this one.
	handOver(e)
	revs := h.revisions()
	startHop := func() *session.Hop {
		var hop *session.Hop
		ctx, hop = sess.StartHopAt(ctx, "script", start,
			attribute.String("http.request.method", method), attribute.String("url.path", configPath),
			attribute.String("client.address", ip), attribute.String("bootchain.arch", q.arch))
		return hop
	}
	var hop *session.Hop
	if h.spans {
		// The hop's span is the parent of whatever the decision does (a job's
		// dispatch), so it starts first.
		hop = startHop()
	}
	d := h.decide(ctx, mac, mit, known, q, sess, e)
	n := int64(len(d.head) + len(d.script))
	// Without spans a hop is only its record: a machine looping on its script
	// (the same answer within session.RepeatWindow) just raises a count.
	repeated := hop == nil && d.jobID == "" && sess.Repeat("script", d.detail, n, start)
	if hop == nil && !repeated {
		hop = startHop()
	}
	if hop != nil {
		defer hop.End()
		hop.SetDetail(d.detail)
		hop.SetBytes(n)
		if d.jobID != "" {
			hop.Span().SetAttributes(session.AttrJobID.String(d.jobID))
		}
	}
	if d.jobID != "" {
		sess.SetJob(d.jobID)
	}
	if d.final {
		sess.Finish(bootapiv1.SessionState_SESSION_STATE_SUCCEEDED, "", d.detail)
	}
	writeScript(rc, d.head, d.script)
	h.touch.seen(e, mac, mit.Value, q, ip, start)
	// A repeat of a known machine's run, no job: the same request gets the same
	// answer from the memo for a while (fast.go).
	if repeated && known && d.jobID == "" {
		e.setFast(&fastMemo{query: strhash.FNV64a(raw), ip: strhash.FNV64a(ip), until: start.Add(fastWindow).UnixNano(), mit: mit.Value,
			revs: revs, sess: sess, q: q, seenKey: factsKey(q, ip), head: d.head, script: d.script, detail: d.detail, bytes: n})
	} else {
		e.setFast(nil)
	}
}

// decide picks the script; mit is the machine from the cache (known false: none).
func (h *Handler) decide(ctx context.Context, mac string, mit store.Item[*bootapiv1.Machine], known bool, q params, sess *session.Session, e *hotEntry) decision {
	st := h.cfg.State
	m := mit.Value
	if !known {
		m = &bootapiv1.Machine{Mac: mac}
	}
	siteName := m.GetSite()
	if siteName == "" {
		siteName = h.cfg.DefaultSite
	}
	site := &bootapiv1.Site{Name: siteName}
	if sit, ok := st.Sites.Get(siteName); ok {
		site = sit.Value
	}
	if !known {
		switch site.GetDiscoveryPolicy() {
		case bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_REJECT:
			return h.local(mac, false, "unknown machine rejected by site policy")
		case bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_IGNORE:
		default:
			h.touch.discovered(mac, siteName)
		}
	}

	// First match wins: a profile chosen in the menu, a pending job, the machine's
	// default, the site's default, bootapi's default.
	if p := q.profile; p != "" {
		pit, ok := st.Profiles.Get(p)
		if !ok || !(pit.Value.GetMenu() || p == m.GetDefaultProfile() || p == site.GetDefaultProfile()) {
			return decision{script: script.Failure(mac, "profile "+p+" is not offered to this machine"), detail: "menu choice refused: " + p, final: true}
		}
		return h.profileBoot(m, site, pit.Value, nil, "", sess, "menu choice "+p)
	}
	if jit, ok := st.ActiveJob(mac); ok && jit.Value.GetState() == bootapiv1.JobState_JOB_STATE_PENDING {
		if d, ok := h.dispatch(ctx, m, site, jit, sess); ok {
			return d
		}
	}
	action, profile := m.GetDefaultAction(), m.GetDefaultProfile()
	if action == bootapiv1.Action_ACTION_UNSPECIFIED {
		action, profile = site.GetDefaultAction(), site.GetDefaultProfile()
	}
	if action == bootapiv1.Action_ACTION_UNSPECIFIED {
		action = h.cfg.DefaultAction
	}
	switch action {
	case bootapiv1.Action_ACTION_LOCAL_DISK:
		return h.local(mac, false, "default: local disk")
	case bootapiv1.Action_ACTION_SANBOOT:
		return h.local(mac, true, "default: sanboot first disk")
	case bootapiv1.Action_ACTION_SHELL:
		s, _ := script.Shell(mac)
		return decision{script: s, detail: "default: iPXE shell", final: true}
	case bootapiv1.Action_ACTION_PROFILE:
		pit, ok := st.Profiles.Get(profile)
		if !ok {
			return decision{script: script.Failure(mac, "default profile "+profile+" does not exist"), detail: "default profile missing: " + profile, final: true}
		}
		return h.profileBoot(m, site, pit.Value, nil, "", sess, "default profile "+profile)
	}
	return h.menu(e, m, site)
}

func (h *Handler) local(mac string, sanboot bool, why string) decision {
	s, _ := script.LocalDisk(mac, sanboot, why)
	return decision{script: s, detail: why, final: true}
}

func (h *Handler) menu(e *hotEntry, m *bootapiv1.Machine, site *bootapiv1.Site) decision {
	r, err := h.menuBody()
	var head string
	if err == nil {
		head, err = e.menuHead(m, site.GetName())
	}
	if err != nil {
		h.log.Error("menu not rendered", "mac", m.GetMac(), "err", err)
		return decision{script: script.Failure(m.GetMac(), "menu could not be rendered"), detail: "menu render failed: " + err.Error(), final: true}
	}
	return decision{head: head, script: r.body, detail: r.detail, final: true}
}

// menuRender is the menu's shared part rendered from the profiles at rev, with
// its hop detail.
type menuRender struct {
	rev          int64
	body, detail string
}

// menuBody renders the shared part of the menu once per change of the profiles;
// every request in between reads it without a lock.
func (h *Handler) menuBody() (*menuRender, error) {
	rev := h.cfg.State.Profiles.Revision()
	if r := h.menuR.Load(); r != nil && r.rev == rev {
		return r, nil
	}
	h.menuMu.Lock()
	defer h.menuMu.Unlock()
	if r := h.menuR.Load(); r != nil && r.rev == rev {
		return r, nil
	}
	var items []script.MenuItem
	for _, it := range h.cfg.State.Profiles.List(func(it store.Item[*bootapiv1.Profile]) bool { return it.Value.GetMenu() }) {
		u := h.configURL()
		u.RawQuery = url.Values{"profile": {it.Value.GetName()}}.Encode()
		items = append(items, script.MenuItem{Profile: it.Value.GetName(), Description: it.Value.GetDescription(), URL: u})
	}
	body, err := script.MenuBody(items, h.cfg.MenuTimeout)
	if err != nil {
		return nil, err
	}
	r := &menuRender{rev: rev, body: body, detail: fmt.Sprintf("menu (%d profiles)", len(items))}
	h.menuR.Store(r)
	return r, nil
}

// dispatch renders the job's script and moves the job pending -> dispatched in one
// compare-and-swap; if another request (or replica) got there first, it reports
// false and the machine gets its default.
func (h *Handler) dispatch(ctx context.Context, m *bootapiv1.Machine, site *bootapiv1.Site, jit store.Item[*bootapiv1.Job], sess *session.Session) (decision, bool) {
	job := jit.Value
	pit, ok := h.cfg.State.Profiles.Get(job.GetProfile())
	now := h.cfg.Now()
	if !ok {
		// This replica's cache may simply not have the profile yet: ask etcd before
		// failing anyone's job (a rare path: a job with a missing profile).
		p := &bootapiv1.Profile{}
		rev, err := h.cfg.State.Store().Get(ctx, store.Key("profiles", job.GetProfile()), p)
		switch {
		case errors.Is(err, store.ErrNotFound):
			h.failJob(ctx, jit, "profile "+job.GetProfile()+" no longer exists", now)
			return decision{}, false
		case err != nil:
			h.log.Error("job not dispatched: profile unreadable", "job", job.GetId(), "err", err)
			return decision{}, false
		}
		pit = store.Item[*bootapiv1.Profile]{Name: p.GetName(), Value: p, ModRevision: rev}
	}
	var raw [32]byte
	rand.Read(raw[:])
	token := hex.EncodeToString(raw[:])
	d := h.profileBoot(m, site, pit.Value, job, token, sess, "job "+job.GetId()+" profile "+job.GetProfile())
	if d.script == "" {
		h.failJob(ctx, jit, d.detail, now)
		return decision{}, false
	}
	next := proto.Clone(job).(*bootapiv1.Job)
	sum := sha256.Sum256([]byte(token))
	next.State, next.TokenHash, next.Traceparent = bootapiv1.JobState_JOB_STATE_DISPATCHED, sum[:], sess.Traceparent()
	next.DispatchTime, next.UpdateTime = timestamppb.New(now), timestamppb.New(now)
	next.DeadlineTime = timestamppb.New(now.Add(job.GetTimeout().AsDuration()))
	rev, err := h.cfg.State.Transition(ctx, next, jit.ModRevision)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			h.log.Error("job not dispatched", "job", job.GetId(), "mac", m.GetMac(), "err", err)
		}
		return decision{}, false
	}
	// Dispatches are rare: let this replica's cache catch up before the script goes
	// out, so whoever asks this bootapi next (the API, the machine's next request)
	// sees the job dispatched.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	h.cfg.State.Jobs.WaitRevision(wctx, rev)
	cancel()
	h.Dispatches.Add(1)
	d.jobID = job.GetId()
	return d, true
}

func (h *Handler) failJob(ctx context.Context, jit store.Item[*bootapiv1.Job], msg string, now time.Time) {
	j := proto.Clone(jit.Value).(*bootapiv1.Job)
	state.Finish(j, bootapiv1.JobState_JOB_STATE_FAILED, msg, now)
	if _, err := h.cfg.State.Transition(ctx, j, jit.ModRevision); err != nil && !errors.Is(err, store.ErrConflict) {
		h.log.Error("job not failed", "job", j.GetId(), "err", err)
	}
}

// profileBoot renders a kernel boot of p. For a job it adds the callback, token and
// traceparent parameters. A render failure returns an empty script and the reason.
func (h *Handler) profileBoot(m *bootapiv1.Machine, site *bootapiv1.Site, p *bootapiv1.Profile, job *bootapiv1.Job, token string, sess *session.Session, why string) decision {
	fail := func(err error) decision {
		msg := fmt.Sprintf("profile %s cannot be booted: %v", p.GetName(), err)
		h.log.Error("boot script not rendered", "mac", m.GetMac(), "profile", p.GetName(), "err", err)
		if job != nil {
			return decision{detail: msg}
		}
		return decision{script: script.Failure(m.GetMac(), "profile "+p.GetName()+" cannot be booted"), detail: msg, final: true}
	}
	tp := sess.Traceparent()
	kernel, err := h.resolve(site, p.GetKernel(), tp)
	if err != nil {
		return fail(fmt.Errorf("kernel: %w", err))
	}
	bt := script.Boot{MAC: m.GetMac(), Hostname: m.GetHostname(), Profile: p.GetName(), Kernel: script.File{URL: kernel}}
	seen := map[string]bool{}
	for i, ref := range p.GetInitrds() {
		u, err := h.resolve(site, ref, tp)
		if err != nil {
			return fail(fmt.Errorf("initrd %d: %w", i, err))
		}
		name := script.ImageName(u, i)
		if seen[name] {
			name = fmt.Sprintf("%d-%s", i, name)
		}
		seen[name] = true
		bt.Initrds = append(bt.Initrds, script.File{URL: u, Name: name})
	}
	var td script.TemplateData
	td.Machine.MAC, td.Machine.Hostname, td.Machine.Site, td.Machine.Labels = m.GetMac(), m.GetHostname(), site.GetName(), m.GetLabels()
	td.Profile.Name = p.GetName()
	if job != nil {
		td.Job.ID = job.GetId()
	}
	args, err := script.Cmdline(p.GetCmdline()+" "+site.GetExtraCmdline(), td)
	if err != nil {
		return fail(err)
	}
	if job != nil {
		cb := h.cfg.PublicURL.JoinPath("ipxe", "v1", "report")
		cb.RawQuery = url.Values{"job": {job.GetId()}}.Encode()
		args = append(args, "bootchain.callback="+cb.String(), "bootchain.token="+token, "bootchain.job="+job.GetId())
	}
	if tp != "" {
		args = append(args, "bootchain.traceparent="+tp)
	}
	bt.Args = args
	if job != nil {
		bt.JobID = job.GetId()
	}
	s, err := script.RenderBoot(bt)
	if err != nil {
		return fail(err)
	}
	return decision{script: s, detail: why}
}

// resolve turns an artifact reference into the URL the machine downloads from: its
// site's artifactstore for artifact names, the URL itself otherwise.
func (h *Handler) resolve(site *bootapiv1.Site, ref *bootapiv1.ArtifactRef, traceparent string) (*url.URL, error) {
	var raw string
	switch src := ref.GetSource().(type) {
	case *bootapiv1.ArtifactRef_Artifact:
		base := site.GetArtifactUrl()
		if base == "" {
			base = h.cfg.ArtifactURL
		}
		if base == "" {
			return nil, errors.New("no artifactstore URL for site " + site.GetName())
		}
		raw = artifacturl.HTTPURL(base, src.Artifact, traceparent)
	case *bootapiv1.ArtifactRef_Url:
		raw = src.Url
	default:
		return nil, errors.New("empty reference")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	return u, nil
}

// report takes an installer callback: form fields job (or the job query
// parameter), token, state (running, succeeded, failed), message, progress.
func (h *Handler) report(ctx context.Context, rc *fasthttp.RequestCtx) {
	form, err := reportForm(rc)
	if err != nil {
		h.Rejected.Add(1)
		httpError(rc, "body: "+err.Error(), fasthttp.StatusBadRequest)
		return
	}
	id := form.Get("job")
	token := form.Get("token")
	var st bootapiv1.JobState
	switch form.Get("state") {
	case "running":
		st = bootapiv1.JobState_JOB_STATE_RUNNING
	case "succeeded":
		st = bootapiv1.JobState_JOB_STATE_SUCCEEDED
	case "failed":
		st = bootapiv1.JobState_JOB_STATE_FAILED
	default:
		h.Rejected.Add(1)
		httpError(rc, "state: want running, succeeded or failed", fasthttp.StatusBadRequest)
		return
	}
	progress := int32(0)
	if p := form.Get("progress"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 100 {
			h.Rejected.Add(1)
			httpError(rc, "progress: want 0-100", fasthttp.StatusBadRequest)
			return
		}
		progress = int32(n)
	}
	msg := form.Get("message")
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	msg = strings.ToValidUTF8(msg, "?")
	if id == "" || token == "" {
		h.Rejected.Add(1)
		httpError(rc, "job and token are required", fasthttp.StatusBadRequest)
		return
	}
	now := h.cfg.Now()
	var code int
	var why string
	job, rev, err := h.cfg.State.Update(ctx, id, func(j *bootapiv1.Job) error {
		sum := sha256.Sum256([]byte(token))
		if len(j.GetTokenHash()) == 0 || subtle.ConstantTimeCompare(sum[:], j.GetTokenHash()) != 1 {
			code, why = fasthttp.StatusForbidden, "token does not match this job"
			return errRefused
		}
		switch j.GetState() {
		case bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING:
		default:
			code, why = fasthttp.StatusConflict, "job is "+strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_"))+": reports are closed"
			return errRefused
		}
		j.Reports = append(j.Reports, &bootapiv1.JobReport{State: st, Message: msg, Progress: progress, Time: timestamppb.New(now)})
		if len(j.Reports) > 100 {
			j.Reports = j.Reports[len(j.Reports)-100:]
		}
		j.Progress, j.Message, j.UpdateTime = progress, msg, timestamppb.New(now)
		if st == bootapiv1.JobState_JOB_STATE_RUNNING {
			j.State = st
			return nil
		}
		state.Finish(j, st, msg, now)
		return nil
	})
	// The callback is a hop of the boot session it belongs to, accepted or not.
	// A refused report has no job from Update: the cache still knows its session.
	known := job
	if known == nil {
		if jit, ok := h.cfg.State.Jobs.Get(id); ok {
			known = jit.Value
		}
	}
	tp := string(rc.Request.Header.Peek("traceparent"))
	if tp == "" {
		tp = known.GetTraceparent()
	}
	sess, _ := h.cfg.Sessions.FromTraceparent(tp, known.GetMac())
	var hop *session.Hop
	if sess != nil {
		_, hop = sess.StartHop(ctx, "callback", session.AttrJobID.String(id), attribute.String("bootchain.report_state", form.Get("state")))
		defer hop.End()
		hop.SetDetail(form.Get("state") + ": " + msg)
	}
	switch {
	case errors.Is(err, errRefused):
		h.Rejected.Add(1)
		if hop != nil {
			hop.Fail(errors.New(why))
		}
		httpError(rc, why, code)
		return
	case errors.Is(err, store.ErrNotFound):
		h.Rejected.Add(1)
		if hop != nil {
			hop.Fail(errors.New("no such job"))
		}
		httpError(rc, "job: no such job", fasthttp.StatusNotFound)
		return
	case err != nil:
		h.log.Error("report not recorded", "job", id, "err", err)
		if hop != nil {
			hop.Fail(err)
		}
		httpError(rc, "report not recorded, retry", fasthttp.StatusServiceUnavailable)
		return
	}
	h.Reports.Add(1)
	// As for dispatch: this replica reads its own write from here on.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	h.cfg.State.Jobs.WaitRevision(wctx, rev)
	cancel()
	if sess != nil {
		switch st {
		case bootapiv1.JobState_JOB_STATE_SUCCEEDED:
			sess.Finish(bootapiv1.SessionState_SESSION_STATE_SUCCEEDED, "", "installer reported success: "+msg)
		case bootapiv1.JobState_JOB_STATE_FAILED:
			sess.Finish(bootapiv1.SessionState_SESSION_STATE_FAILED, "callback", "installer reported failure: "+msg)
		}
	}
	h.log.Info("job report", "job", id, "mac", job.GetMac(), "state", form.Get("state"), "progress", progress)
	rc.SetContentType(textPlain)
	rc.SetBodyString("ok " + id + " " + strings.ToLower(strings.TrimPrefix(job.GetState().String(), "JOB_STATE_")) + "\n")
}

var errRefused = errors.New("report refused")

// reportForm is what net/http's Request.ParseForm made of a POST, as
// Request.Form: a url-encoded body's fields, then the query's, with the same errors
// (the first of a bad Content-Type, the body's, the query's). Its strings are
// copies, not views of fasthttp's buffers.
func reportForm(rc *fasthttp.RequestCtx) (url.Values, error) {
	ct := string(rc.Request.Header.ContentType())
	if ct == "" {
		ct = "application/octet-stream"
	}
	ct, _, err := mime.ParseMediaType(ct)
	form := url.Values{}
	if ct == "application/x-www-form-urlencoded" {
		var berr error
		form, berr = url.ParseQuery(string(rc.PostBody()))
		if err == nil {
			err = berr
		}
	}
	q, qerr := url.ParseQuery(string(rc.URI().QueryString()))
	if err == nil {
		err = qerr
	}
	for k, vs := range q {
		form[k] = append(form[k], vs...)
	}
	return form, err
}

// toucher records machine sightings (last seen, facts) and discovered machines off
// the request path, coalesced per machine and bounded in memory.
type toucher struct {
	st  *state.State
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	pending map[string]sighting
	kick    chan struct{}
	Dropped atomic.Int64
}

type sighting struct {
	facts *bootapiv1.MachineFacts
	site  string
	isNew bool
}

const maxPendingSightings = 65536

func newToucher(st *state.State, log *slog.Logger, now func() time.Time) *toucher {
	return &toucher{st: st, log: log, now: now, pending: map[string]sighting{}, kick: make(chan struct{}, 1)}
}

func (t *toucher) discovered(mac, site string) {
	t.add(mac, sighting{site: site, isNew: true})
}

// seen records facts, at most once per sightingEvery per machine unless they
// changed; at is the time of the request.
// m is the machine as the request found it in the cache (nil when unknown); e
// remembers a check that found nothing to write, for the same record and facts.
func (t *toucher) seen(e *hotEntry, mac string, m *bootapiv1.Machine, q params, ip string, at time.Time) {
	now := at.UnixNano()
	key := factsKey(q, ip)
	e.mu.Lock()
	fresh := m != nil && e.seenFor == m && e.seenKey == key && now < e.seenUntil
	e.mu.Unlock()
	if fresh {
		return
	}
	every := sightingEvery(mac)
	if last := m.GetLastSeenTime(); last != nil && now-last.AsTime().UnixNano() < int64(every) && sameFacts(m.GetFacts(), q, ip) {
		e.mu.Lock()
		e.seenFor, e.seenKey, e.seenUntil = m, key, last.AsTime().Add(every).UnixNano()
		e.mu.Unlock()
		return
	}
	if t.add(mac, sighting{facts: facts(q, ip)}) && m != nil {
		// Until the cache has the write (a record other than m), requests with
		// these facts need no sighting of their own: another write of the same
		// thing would only fail its compare against the cache and be redone
		// alone. A write that did not happen is tried again after this.
		e.mu.Lock()
		e.seenFor, e.seenKey, e.seenUntil = m, key, now+int64(sightingInFlight)
		e.mu.Unlock()
	}
}

// sightingEvery is how often a machine that keeps asking has its last-seen
// time rewritten: a minute and up to 30 s more, fixed per MAC, so that
// machines first seen together (a fleet powering on) do not all come due in
// the same second every minute.
func sightingEvery(mac string) time.Duration {
	return time.Minute + time.Duration(strhash.FNV64a(mac)%uint64(30*time.Second))
}

// sightingInFlight is how long a machine's queued sighting stands for its
// repeats of the same request while the write is on its way.
const sightingInFlight = 5 * time.Second

// factsKey hashes what a sighting records from a request.
func factsKey(q params, ip string) uint64 {
	h := strhash.FNV64a(ip)
	for _, f := range [...]string{q.arch, q.platform, q.uuid, q.serial, q.manufacturer, q.product} {
		h = (h ^ strhash.FNV64a(f)) * 1099511628211
	}
	return h
}

// sameFacts compares stored facts with a request's without building a message (the
// common case on the script path).
func sameFacts(f *bootapiv1.MachineFacts, q params, ip string) bool {
	return f.GetIp() == ip && f.GetArch() == q.arch && f.GetPlatform() == q.platform &&
		f.GetUuid() == q.uuid && f.GetSerial() == q.serial &&
		f.GetManufacturer() == q.manufacturer && f.GetProduct() == q.product
}

// add queues a sighting; it reports false when the queue was full and the
// sighting is dropped.
func (t *toucher) add(mac string, s sighting) bool {
	t.mu.Lock()
	old, ok := t.pending[mac]
	if !ok && len(t.pending) >= maxPendingSightings {
		t.mu.Unlock()
		t.Dropped.Add(1)
		return false
	}
	if s.facts == nil {
		s.facts = old.facts
	}
	s.isNew = s.isNew || old.isNew
	if s.site == "" {
		s.site = old.site
	}
	t.pending[mac] = s
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
	return true
}

func (t *toucher) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.kick:
		}
		t.mu.Lock()
		batch := t.pending
		t.pending = map[string]sighting{}
		t.mu.Unlock()
		macs := make([]string, 0, len(batch))
		for mac := range batch {
			macs = append(macs, mac)
		}
		for len(macs) > 0 {
			if ctx.Err() != nil {
				return nil
			}
			n := min(len(macs), sightingBatch)
			t.writeBatch(ctx, macs[:n], batch)
			macs = macs[n:]
		}
	}
}

// sightingBatch is how many sightings share one transaction: a fleet powering on
// together (or a bootapi restart) sees thousands of machines within seconds, and
// one fsynced transaction each would make etcd the bottleneck.
const sightingBatch = 64

// writeBatch records the sightings of macs in one transaction, each compared with
// the machine's revision in the cache. When a compare fails (the cache was behind
// a write), each sighting of the batch is written on its own.
func (t *toucher) writeBatch(ctx context.Context, macs []string, batch map[string]sighting) {
	now := timestamppb.New(t.now())
	cmps := make([]clientv3.Cmp, 0, len(macs))
	puts := make([]clientv3.Op, 0, len(macs))
	var alone []string
	for _, mac := range macs {
		s := batch[mac]
		key := store.Key("machines", mac)
		it, exists := t.st.Machines.Get(mac)
		var m *bootapiv1.Machine
		if exists {
			m = proto.Clone(it.Value).(*bootapiv1.Machine) // cache values are shared: change a copy
		} else {
			m = &bootapiv1.Machine{}
		}
		if m = s.apply(m, exists, mac, now); m == nil {
			// Not in the cache and not new: deleted, or the cache is behind; etcd decides.
			alone = append(alone, mac)
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.log.Warn("machine sighting not recorded", "mac", mac, "err", err)
			continue
		}
		cmps = append(cmps, store.Unchanged(key, it.ModRevision)) // 0 when not cached
		puts = append(puts, clientv3.OpPut(key, string(b)))
	}
	if len(puts) > 0 {
		tctx, cancel := t.st.Store().WithTimeout(ctx)
		resp, err := t.st.Store().Client().Txn(tctx).If(cmps...).Then(puts...).Commit()
		cancel()
		if err != nil || !resp.Succeeded {
			alone = macs
		}
	}
	for _, mac := range alone {
		if err := t.write(ctx, mac, batch[mac]); err != nil && ctx.Err() == nil {
			t.log.Warn("machine sighting not recorded", "mac", mac, "err", err)
		}
	}
}

// apply records the sighting on m (exists: m is the stored record). It returns nil
// when there is nothing to write: a machine that is gone and was not discovered
// here is not resurrected.
func (s sighting) apply(m *bootapiv1.Machine, exists bool, mac string, now *timestamppb.Timestamp) *bootapiv1.Machine {
	if !exists {
		if !s.isNew {
			return nil
		}
		m.Mac, m.Site, m.Discovered, m.CreateTime, m.UpdateTime = mac, s.site, true, now, now
	}
	if s.facts != nil {
		m.Facts = s.facts
	}
	m.LastSeenTime = now
	return m
}

func (t *toucher) write(ctx context.Context, mac string, s sighting) error {
	now := timestamppb.New(t.now())
	_, _, err := store.Mutate(ctx, t.st.Store(), store.Key("machines", mac), func() *bootapiv1.Machine { return &bootapiv1.Machine{} },
		func(m *bootapiv1.Machine, exists bool) (*bootapiv1.Machine, error) {
			return s.apply(m, exists, mac, now), nil
		})
	return err
}
