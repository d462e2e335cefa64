// Package ui is bootapi's dashboard: read-only HTML pages under /ui/ on
// bootapi's HTTP port, for operators who sign in with an API token.
//
//	GET  /ui/login, POST /ui/login   sign in: a token for an HttpOnly cookie
//	POST /ui/logout                  sign out
//	GET  /ui/boots                   the fleet's boot sessions, failed and stalled first, per site
//	GET  /ui/boots/<mac>             one session as a waterfall of its hops, with its trace link
//	GET  /ui/jobs                    jobs and their states
//	GET  /ui/machines                machines and what they last did
//	GET  /ui/events                  server-sent events: "changed" when any of those did
//
// The pages read the caches bootapi already keeps (sessions, jobs, machines):
// each cache is mirrored into a sorted snapshot that every request shares; a
// page filters and pages it on the server. The mirrors follow their caches
// only while someone looks (a page or an event stream lately), and are sorted
// into snapshots only then: a bootapi whose dashboard nobody has open spends
// nothing on a fleet's first contact. Rendering is html/template, so user data
// (hostnames, labels, messages) is escaped for where it lands.
package ui

import (
	"cmp"
	"context"
	"embed"
	"html/template"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"
)

// Config configures the dashboard.
type Config struct {
	Sessions *store.Cache[*bootapiv1.BootSession]
	Jobs     *store.Cache[*bootapiv1.Job]
	Machines *store.Cache[*bootapiv1.Machine]
	// Session returns a machine's latest session with its hops (the session
	// recorder's Get).
	Session func(ctx context.Context, mac string) (*bootapiv1.BootSession, bool)
	// Auth checks the token a user signs in with, on every request.
	Auth *auth.Authenticator
	// DefaultSite is the site of machines that name none (bootapi's --site).
	DefaultSite string
	// TraceURL is the trace backend's page of one trace, {trace_id} standing for
	// the trace's ID (http://jaeger:16686/trace/{trace_id}); empty: no link.
	TraceURL string
	// Refresh is how often changed caches are re-sorted and open pages told,
	// while a page is open; default one second.
	Refresh time.Duration
	Logger  *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// UI is the dashboard: Run keeps its snapshots, Handle serves it.
type UI struct {
	cfg      Config
	log      *slog.Logger
	pages    *template.Template
	sessions *view[*bootapiv1.BootSession]
	jobs     *view[*bootapiv1.Job]
	machines *view[*bootapiv1.Machine]

	sessSnap atomic.Pointer[snapshot[*bootapiv1.BootSession]]
	jobSnap  atomic.Pointer[snapshot[*bootapiv1.Job]]
	machSnap atomic.Pointer[snapshot[*bootapiv1.Machine]]

	// version counts the rebuilds; changed is closed and replaced at each, to
	// wake the event streams; done is closed when Run returns.
	mu      sync.Mutex
	version uint64
	changed chan struct{}
	done    chan struct{}

	// streams counts the open event streams: while there is one, Run rebuilds
	// on its ticks. refresh carries a page's ask for an up-to-date snapshot;
	// Run closes the channel it sent once the snapshots are rebuilt.
	streams atomic.Int64
	refresh chan chan struct{}
	// following: the views follow their caches (someone looked lately).
	following atomic.Bool
}

//go:embed templates/*.html static/*
var files embed.FS

// templates are the pages, parsed once; each UI clones them with its clock.
var templates = template.Must(template.New("").Funcs(funcs(time.Now)).ParseFS(files, "templates/*.html"))

// New returns the dashboard; Run it.
func New(cfg Config) *UI {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Second
	}
	u := &UI{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}), done: make(chan struct{}), refresh: make(chan chan struct{})}
	u.pages = template.Must(templates.Clone()).Funcs(funcs(cfg.Now)).Funcs(template.FuncMap{"hostname": u.hostname})
	u.sessions = newView(cfg.Sessions, compareSessions, func(s *bootapiv1.BootSession) (string, string) {
		return s.GetSite(), sessionState(s.GetState())
	})
	u.jobs = newView(cfg.Jobs, func(a, b *bootapiv1.Job) int {
		return cmp.Or(b.GetUpdateTime().AsTime().Compare(a.GetUpdateTime().AsTime()), strings.Compare(a.GetId(), b.GetId()))
	}, func(j *bootapiv1.Job) (string, string) { return u.siteOf(j.GetMac()), jobState(j.GetState()) })
	u.machines = newView(cfg.Machines, func(a, b *bootapiv1.Machine) int {
		return cmp.Or(b.GetLastSeenTime().AsTime().Compare(a.GetLastSeenTime().AsTime()), strings.Compare(a.GetMac(), b.GetMac()))
	}, func(m *bootapiv1.Machine) (string, string) {
		if m.GetDiscovered() {
			return u.machineSite(m), "discovered"
		}
		return u.machineSite(m), "registered"
	})
	u.sessSnap.Store(&snapshot[*bootapiv1.BootSession]{})
	u.jobSnap.Store(&snapshot[*bootapiv1.Job]{})
	u.machSnap.Store(&snapshot[*bootapiv1.Machine]{})
	return u
}

// hostname is a machine's hostname, "" when it has no record.
func (u *UI) hostname(mac string) string {
	if it, ok := u.cfg.Machines.Get(mac); ok {
		return it.Value.GetHostname()
	}
	return ""
}

// siteOf is the site of a machine, for jobs (which name only the MAC).
func (u *UI) siteOf(mac string) string {
	if it, ok := u.cfg.Machines.Get(mac); ok {
		return u.machineSite(it.Value)
	}
	return ""
}

// machineSite is a machine's site: its own, else the default site.
func (u *UI) machineSite(m *bootapiv1.Machine) string {
	if s := m.GetSite(); s != "" {
		return s
	}
	return u.cfg.DefaultSite
}

// compareSessions puts failed and stalled sessions first, then active, then
// succeeded; the latest first within each.
func compareSessions(a, b *bootapiv1.BootSession) int {
	return cmp.Or(cmp.Compare(stateRank(a.GetState()), stateRank(b.GetState())),
		b.GetUpdateTime().AsTime().Compare(a.GetUpdateTime().AsTime()),
		strings.Compare(a.GetMac(), b.GetMac()))
}

func stateRank(s bootapiv1.SessionState) int {
	switch s {
	case bootapiv1.SessionState_SESSION_STATE_FAILED:
		return 0
	case bootapiv1.SessionState_SESSION_STATE_STALLED:
		return 1
	case bootapiv1.SessionState_SESSION_STATE_ACTIVE:
		return 2
	case bootapiv1.SessionState_SESSION_STATE_SUCCEEDED:
		return 3
	}
	return 4
}

// Run keeps the dashboard's views until ctx ends; then it ends the event
// streams. The views follow the caches only while someone looks: a page's
// ask for fresh snapshots starts them following (a full sort of each), and
// they stop, dropping their records, after idleTicks refresh ticks with no
// page served and no event stream open. While a stream is open the snapshots
// are rebuilt on each tick when anything changed.
func (u *UI) Run(ctx context.Context) error {
	defer close(u.done)
	var fs *followers
	defer func() { fs.stop() }()
	t := time.NewTicker(u.cfg.Refresh)
	defer t.Stop()
	idle := 0
	for {
		var sessEv <-chan store.Event[*bootapiv1.BootSession]
		var jobEv <-chan store.Event[*bootapiv1.Job]
		var machEv <-chan store.Event[*bootapiv1.Machine]
		if fs != nil {
			sessEv, jobEv, machEv = fs.sess.events, fs.jobs.events, fs.machs.events
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sessEv:
			fs.sess.take(ev, ok)
		case ev, ok := <-jobEv:
			fs.jobs.take(ev, ok)
		case ev, ok := <-machEv:
			fs.machs.take(ev, ok)
		case done := <-u.refresh:
			if fs == nil {
				fs = u.follow()
			}
			idle = 0
			u.rebuild()
			close(done)
		case <-t.C:
			switch {
			case fs == nil && u.streams.Load() == 0:
			case u.streams.Load() > 0:
				// A stream whose page did not wait for its first rebuild
				// starts the views following here.
				if fs == nil {
					fs = u.follow()
				}
				idle = 0
				u.rebuild()
			case idle < idleTicks:
				idle++
			default:
				fs.stop()
				fs = nil
				u.forget()
			}
		}
	}
}

// idleTicks is how many refresh ticks the views keep following the caches
// after the last page or event stream: a minute at the default refresh.
const idleTicks = 60

// followers are the three views' subscriptions while someone looks.
type followers struct {
	sess  *follower[*bootapiv1.BootSession]
	jobs  *follower[*bootapiv1.Job]
	machs *follower[*bootapiv1.Machine]
}

// follow starts the views following their caches.
func (u *UI) follow() *followers {
	u.following.Store(true)
	return &followers{subscribe(u.sessions), subscribe(u.jobs), subscribe(u.machines)}
}

// stop ends the subscriptions (a nil fs has none).
func (fs *followers) stop() {
	if fs == nil {
		return
	}
	fs.sess.cancel()
	fs.jobs.cancel()
	fs.machs.cancel()
}

// forget drops the views' records once nobody looks; the snapshots stay as
// they were, for a page that cannot wait for the next follow's sort.
func (u *UI) forget() {
	u.sessions.forget()
	u.jobs.forget()
	u.machines.forget()
	u.following.Store(false)
}

// fresh asks Run to bring the snapshots up to date and waits until it has, or
// until ctx ends or Run has (then the snapshots are as they are).
func (u *UI) fresh(ctx context.Context) {
	done := make(chan struct{})
	select {
	case u.refresh <- done:
	case <-u.done:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// rebuild publishes the snapshots of the views that changed and wakes the
// event streams.
func (u *UI) rebuild() {
	if !u.sessions.dirty && !u.jobs.dirty && !u.machines.dirty {
		return
	}
	// Jobs are grouped by their machine's site: a machine's change regroups them.
	if u.machines.dirty {
		u.jobs.dirty, u.jobs.regroup = true, true
	}
	if u.sessions.dirty {
		u.sessSnap.Store(u.sessions.build())
	}
	if u.jobs.dirty {
		u.jobSnap.Store(u.jobs.build())
	}
	if u.machines.dirty {
		u.machSnap.Store(u.machines.build())
	}
	u.mu.Lock()
	u.version++
	close(u.changed)
	u.changed = make(chan struct{})
	u.mu.Unlock()
}

// Version is the number of snapshot rebuilds so far and a channel closed at
// the next one.
func (u *UI) Version() (uint64, <-chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.version, u.changed
}

// follower is one view's cache subscription.
type follower[T proto.Message] struct {
	v      *view[T]
	events <-chan store.Event[T]
	cancel func()
}

func subscribe[T proto.Message](v *view[T]) *follower[T] {
	f := &follower[T]{v: v}
	f.resubscribe()
	return f
}

func (f *follower[T]) resubscribe() {
	snap, events, cancel := f.v.cache.Subscribe(subscriberBuffer)
	f.v.reset(snap)
	f.events, f.cancel = events, cancel
}

// take applies an event, or, when the channel closed because the view fell
// behind, starts again from the cache's current records.
func (f *follower[T]) take(ev store.Event[T], ok bool) {
	if ok {
		f.v.apply(ev)
		return
	}
	f.cancel()
	f.resubscribe()
}

// subscriberBuffer is how many changes a view may fall behind its cache before
// it reloads the cache's records instead: a few seconds of a fleet's first
// contact (a session and a sighting per machine), so that a rebuild under
// that load does not cost a reload.
const subscriberBuffer = 32768

// Handle serves a request under /ui.
func (u *UI) Handle(base context.Context, rc *fasthttp.RequestCtx) {
	u.serve(base, rc)
}
