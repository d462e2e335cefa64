package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// config answers a script request; query is its raw query string.
func (h *Handler) config(ctx context.Context, rc *fasthttp.RequestCtx, query []byte) {
	// One copy of the query: what is parsed from it (the MAC, the facts, the arch
	// on the span) outlives the request in the session, the sightings and the
	// exporter, while fasthttp reuses the request's bytes.
	q := parseParams(string(query))
	mac, err := macaddr.Normalize(q.mac)
	if err != nil {
		h.Rejected.Add(1)
		httpError(rc, "mac: "+err.Error(), fasthttp.StatusBadRequest)
		return
	}
	if rc.IsHead() {
		// HEAD changes nothing: no dispatch, no discovered record, no session,
		// no sighting. Its headers are those of the script the machine would get
		// without its job (a HEAD is never the machine's iPXE).
		in, _ := h.input(mac, q.profile)
		h.head(rc, in)
		return
	}
	ip := remoteIP(rc)
	s := h.serve(ctx, bootRequest{
		mac: mac, profile: q.profile, ip: ip, peer: rc.RemoteAddr().String(), arch: q.arch, facts: facts(q, ip),
		attrs: []attribute.KeyValue{attribute.String("http.request.method", fasthttp.MethodGet), attribute.String("url.path", configPath)},
	}, ipxeFormat{h.rendererFor(ip)})
	writeScript(rc, s.Head, s.Body)
}

// bootRequest is a machine's request for what it boots: iPXE's for its
// script (HTTP), or GRUB's for its config, which tftpd makes on its behalf
// (GrubConfig). Both are answered the same way.
type bootRequest struct {
	// mac is normalized; profile is a menu choice ("": none).
	mac, profile string
	// ip is the address the machine's request came from; peer is who
	// asked, for the audit log.
	ip, peer string
	arch     string
	// facts are what the machine reported, for its sighting.
	facts state.Facts
	// site is where the request was seen (tftpd's site): an unknown
	// machine's site when neither its lease nor its session says.
	site string
	// attrs describe the request on its hop.
	attrs []attribute.KeyValue
}

// format is a boot loader's language: iPXE scripts or GRUB configs.
type format interface {
	// render renders a decision (script.Renderer.Render's contract).
	render(d decide.Decision, traceparent string, job *script.Job) (script.Script, error)
	// wait renders "wait, then ask again" (admission control).
	wait(mac string, wait time.Duration) (string, error)
}

type ipxeFormat struct{ r *script.Renderer }

func (f ipxeFormat) render(d decide.Decision, tp string, job *script.Job) (script.Script, error) {
	return f.r.Render(d, tp, job)
}

func (f ipxeFormat) wait(mac string, wait time.Duration) (string, error) {
	return script.Wait(f.r.ConfigURL(), mac, wait)
}

// serve decides what the machine of req boots, executes the decision (a
// job's dispatch, a discovered machine's record), records the hop in its boot
// session and renders the answer in f.
func (h *Handler) serve(ctx context.Context, req bootRequest, f format) script.Script {
	mac, ip := req.mac, req.ip
	in, jit := h.input(mac, req.profile)
	withheld := ""
	if in.Job.GetState() == bootapiv1.JobState_JOB_STATE_PENDING && h.offline() {
		// A dispatch is a committed compare-and-swap before the script goes
		// out (one render per job, a token etcd knows): without etcd the
		// machine boots its default and gets the job once etcd is back.
		withheld = "job " + in.Job.GetId() + " withheld: etcd unreachable"
		in.Job, jit = nil, store.Item[*bootapiv1.Job]{}
	}
	h.Scripts.Add(1)
	start := h.cfg.Now()
	sess := h.cfg.Sessions.Open(ctx, mac, session.OpenOptions{IP: ip, Now: start})
	if h.otherJobIn(sess, jit) {
		// A dispatch is a new boot attempt when the session already had a job:
		// without a DISCOVER seen by bootchain's dhcpd nothing else marks it,
		// and two jobs' hops would share one trace.
		sess = h.cfg.Sessions.Open(ctx, mac, session.OpenOptions{IP: ip, Now: start, New: true})
	}
	if in.Machine == nil {
		// An unknown machine belongs where it was seen, not where this bootapi
		// runs: one bootapi serves many sites, and the menu must point at the
		// artifactstore of the machine's own site.
		if site := h.seenSite(mac, ip, sess, start); site != "" {
			in.DefaultSite = site
		} else if req.site != "" {
			in.DefaultSite = req.site
		}
	}
	if decide.NeedsTrust(in) {
		in.Trusted, in.Untrusted = h.cfg.State.Trusted(ctx, decide.SiteOf(in), mac, state.Requester{IP: ip, TraceID: sess.TraceID()}, start)
	}
	startHop := func() *session.Hop {
		var hop *session.Hop
		attrs := append([]attribute.KeyValue{attribute.String("client.address", ip), attribute.String("bootchain.arch", req.arch)}, req.attrs...)
		ctx, hop = sess.StartHopAt(ctx, "script", start, attrs...)
		return hop
	}
	var hop *session.Hop
	if h.spans {
		// The hop's span is the parent of whatever the decision does (a job's
		// dispatch), so it starts first.
		hop = startHop()
	}
	// audit (P6): the revision of a dispatch, recorded before its script goes out.
	ctx, revs := store.WithRevisions(ctx)
	s, jobID := h.answer(ctx, in, jit, sess, ip, f)
	if withheld != "" {
		h.Withheld.Add(1)
		s.Detail += "; " + withheld
	}
	if jobID != "" {
		h.auditDispatch(ctx, req.peer, mac, in.Machine.GetSite(), jobID, revs.Last())
	}
	n := s.Len()
	// Without spans a hop is only its record: a machine looping on its script
	// (the same answer within session.RepeatWindow) just raises a count.
	repeated := hop == nil && jobID == "" && sess.Repeat("script", s.Detail, n, start)
	if hop == nil && !repeated {
		hop = startHop()
	}
	if hop != nil {
		defer hop.End()
		hop.SetDetail(s.Detail)
		hop.SetBytes(n)
		if jobID != "" {
			hop.Span().SetAttributes(session.AttrJobID.String(jobID))
		}
	}
	if jobID != "" {
		sess.SetJob(jobID)
	}
	if s.Final {
		sess.Finish(bootapiv1.SessionState_SESSION_STATE_SUCCEEDED, "", s.Detail)
	}
	h.cfg.State.Sightings.Seen(mac, in.Machine, req.facts, start)
	return s
}

// otherJobIn reports whether the machine has a pending job (this request may
// dispatch it) and sess is the boot attempt of another of its jobs. The jobs
// say so, not the session's job_id: dispatches are rare, and the jobs cache
// is what dispatched them.
func (h *Handler) otherJobIn(sess *session.Session, jit store.Item[*bootapiv1.Job]) bool {
	pending := jit.Value
	if pending.GetState() != bootapiv1.JobState_JOB_STATE_PENDING {
		return false
	}
	tid := sess.TraceID()
	return len(h.cfg.State.Jobs.List(func(it store.Item[*bootapiv1.Job]) bool {
		j := it.Value
		return j.GetMac() == pending.GetMac() && j.GetId() != pending.GetId() && strings.Contains(j.GetTraceparent(), tid)
	})) > 0
}

// seenSite is the site an unknown machine was seen at: that of the lease its
// address holds (its site's dhcpd handed it out), else that of the dhcpd or
// tftpd that opened its boot session; "" when neither says.
func (h *Handler) seenSite(mac, ip string, sess *session.Session, now time.Time) string {
	if site := h.cfg.State.LeaseSite(mac, ip, now); site != "" {
		return site
	}
	it, ok := h.cfg.Sessions.Cache().Get(mac)
	if ok && it.Value.GetTraceId() == sess.TraceID() {
		return it.Value.GetSite()
	}
	return ""
}

// head answers a HEAD for a script: what a GET from a stranger would get,
// rendered without executing anything.
func (h *Handler) head(rc *fasthttp.RequestCtx, in decide.Input) {
	in.Trusted = false
	s, err := h.renderer(rc).Render(decide.Evaluate(in), "", nil)
	if err != nil {
		h.log.Error("script not rendered", "mac", in.MAC, "err", err)
	}
	writeScript(rc, s.Head, s.Body)
}

// input is what the decision reads for mac, with this bootapi's defaults.
func (h *Handler) input(mac, choice string) (decide.Input, store.Item[*bootapiv1.Job]) {
	in, jit := h.cfg.State.DecisionInput(mac, choice)
	in.DefaultSite, in.DefaultAction = h.cfg.DefaultSite, h.cfg.DefaultAction
	return in, jit
}

// answer decides what mac boots and executes the decision: it records a
// discovered machine and dispatches a pending job. jobID is the job
// dispatched, if any.
func (h *Handler) answer(ctx context.Context, in decide.Input, jit store.Item[*bootapiv1.Job], sess *session.Session, ip string, f format) (s script.Script, jobID string) {
	mac := in.MAC
	d := decide.Evaluate(in)
	var note string // what the hop says beyond the script's detail
	if d.Discover && !h.cfg.State.Sightings.Discovered(mac, d.Site.GetName()) {
		note = "not recorded: site " + d.Site.GetName() + " has its cap of discovered machines"
	}
	if d.Withheld != "" {
		note = d.Withheld
	}
	if d.Job != nil {
		if s, waiting := h.admit(d, mac, f); waiting {
			return s, ""
		}
		if s, ok := h.dispatch(ctx, d, jit, sess, ip, f); ok {
			h.metrics.scripts.WithLabelValues(d.Rule).Inc()
			return s, d.Job.GetId()
		}
		h.admission.release(d.Job.GetId())
		// Not dispatched (another request or replica got there first, or the
		// job failed): the machine gets what it would without the job.
		in.Job = nil
		d = decide.Evaluate(in)
	}
	var tp string
	if d.Action == decide.Boot { // only a kernel boot carries it
		tp = sess.Traceparent()
	}
	s, err := f.render(d, tp, nil)
	if err != nil {
		h.log.Error("script not rendered", "mac", mac, "rule", d.Rule, "err", err)
	}
	h.metrics.scripts.WithLabelValues(d.Rule).Inc()
	if note != "" {
		s.Detail += "; " + note
	}
	return s, ""
}

// dispatch renders the job's script and moves the job pending -> dispatched in one
// compare-and-swap; if another request (or replica) got there first, it reports
// false. A job whose profile is gone or cannot be rendered is failed.
func (h *Handler) dispatch(ctx context.Context, d decide.Decision, jit store.Item[*bootapiv1.Job], sess *session.Session, ip string, f format) (script.Script, bool) {
	job := d.Job
	now := h.cfg.Now()
	if d.Profile == nil {
		// This replica's cache may simply not have the profile yet: ask etcd before
		// failing anyone's job (a rare path: a job with a missing profile).
		p := &bootapiv1.Profile{}
		_, err := h.cfg.State.Store().Get(ctx, store.Key("profiles", job.GetProfile()), p)
		switch {
		case errors.Is(err, store.ErrNotFound):
			h.failJob(ctx, jit, "profile "+job.GetProfile()+" no longer exists", now)
			return script.Script{}, false
		case err != nil:
			h.log.Error("job not dispatched: profile unreadable", "job", job.GetId(), "err", err)
			return script.Script{}, false
		}
		d.Profile = p
	}
	token, key := newToken(), newToken()
	rj := &script.Job{Token: token, InstallerKey: key}
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		rj.IP6 = a
	}
	s, err := f.render(d, sess.Traceparent(), rj)
	if err != nil {
		h.log.Error("boot script not rendered", "mac", job.GetMac(), "job", job.GetId(), "err", err)
		h.failJob(ctx, jit, s.Detail, now)
		return script.Script{}, false
	}
	next := proto.Clone(job).(*bootapiv1.Job)
	sum := tokenHash(token)
	next.State, next.TokenHash, next.Traceparent = bootapiv1.JobState_JOB_STATE_DISPATCHED, sum[:], sess.Traceparent()
	// The token on the command line is a bootstrap token: the first report
	// exchanges it for a fresh one (callback.go), from this address or one that
	// holds the machine's lease.
	next.DispatchIp, next.TokenExchanged = ip, false
	// The installer files' key is good for as long as the job runs (its
	// first boot reads its NoCloud seed): it is bound to the machine's
	// address as the reports are (installer.go).
	kh := tokenHash(key)
	next.InstallerKeyHash = kh[:]
	next.DispatchTime, next.UpdateTime = timestamppb.New(now), timestamppb.New(now)
	next.DeadlineTime = timestamppb.New(now.Add(job.GetTimeout().AsDuration()))
	rev, err := h.transitionRetry(ctx, next, jit.ModRevision)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			h.log.Error("job not dispatched", "job", job.GetId(), "mac", job.GetMac(), "err", err)
		}
		return script.Script{}, false
	}
	// Dispatches are rare: let this replica's cache catch up before the script goes
	// out, so whoever asks this bootapi next (the API, the machine's next request)
	// sees the job dispatched.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	h.cfg.State.Jobs.WaitRevision(wctx, rev)
	cancel()
	h.Dispatches.Add(1)
	return s, true
}

// dispatchRetryBudget bounds how long a script request tries to dispatch its job
// while etcd elects a leader or stalls (a 1,000-machine storm on a small, busy
// machine held every commit for over 8 s: 275 dispatches were lost): a lost
// dispatch boots the machine's default and leaves the job pending, so it is
// worth iPXE's wait, which is longer. Each try gets dispatchTryTimeout: a
// write stuck behind the dead leader must not use up the budget alone.
const (
	dispatchRetryBudget = 25 * time.Second
	dispatchTryTimeout  = 2 * time.Second
)

// transitionRetry is State.Transition tried again while etcd has no leader or
// stalls. A try that etcd applied without answering makes the next one's
// compare fail: then the job, read back, is ours if it holds next's token
// hash. The read-back is a try too (a storm that stalls the write stalls the
// read): a machine whose job was dispatched must get the job's script, not
// its default.
func (h *Handler) transitionRetry(ctx context.Context, next *bootapiv1.Job, rev int64) (int64, error) {
	unanswered := false
	var newRev int64
	_, err := store.RetryTransient(ctx, dispatchRetryBudget, func() error {
		tctx, cancel := context.WithTimeout(ctx, dispatchTryTimeout)
		defer cancel()
		r, err := h.cfg.State.Transition(tctx, next, rev)
		if errors.Is(err, store.ErrConflict) && unanswered {
			cur := &bootapiv1.Job{}
			r, err = h.cfg.State.Store().Get(tctx, state.JobKey(next.GetId()), cur)
			if !store.Transient(err) && (err != nil || cur.GetState() != next.GetState() || !bytes.Equal(cur.GetTokenHash(), next.GetTokenHash())) {
				// Not ours (another dispatch, or the job deleted meanwhile).
				err = store.ErrConflict
			}
		}
		unanswered = unanswered || store.Transient(err)
		newRev = r
		return err
	})
	return newRev, err
}

func (h *Handler) failJob(ctx context.Context, jit store.Item[*bootapiv1.Job], msg string, now time.Time) {
	j := proto.Clone(jit.Value).(*bootapiv1.Job)
	state.Finish(j, bootapiv1.JobState_JOB_STATE_FAILED, msg, now)
	if _, err := h.cfg.State.Transition(ctx, j, jit.ModRevision); err != nil && !errors.Is(err, store.ErrConflict) {
		h.log.Error("job not failed", "job", j.GetId(), "err", err)
	}
}

// facts reads what iPXE reported, bounded and stripped of anything unprintable.
func facts(q params, ip string) state.Facts {
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
	return state.Facts{
		IP: ip, Arch: clean(q.arch), Platform: clean(q.platform), UUID: clean(q.uuid), Serial: clean(q.serial),
		Manufacturer: clean(q.manufacturer), Product: clean(q.product),
	}
}
