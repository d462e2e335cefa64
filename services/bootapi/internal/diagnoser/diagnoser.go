// Package diagnoser puts pkg/diagnose to work in bootapi: it records a
// diagnosis on every boot session that failed or stalled, and fails the job
// dispatched in it with the diagnosis as its message.
//
// A session that a service failed (artifactstore's 404, the installer's
// failure) is diagnosed as soon as bootapi's session cache sees it; an active
// session is looked at by the sweep once it has been idle for the shortest
// stage timeout, and diagnosed when its stage's timeout has passed. Every
// replica runs both; the diagnosis is written with a compare-and-swap on the
// session's revision, so exactly one replica acts on it (counts it, fails the
// job).
package diagnoser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/diagnose"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Config configures a Diagnoser.
type Config struct {
	Store    *store.Store
	Sessions *session.Recorder
	State    *state.State
	Timeouts diagnose.Timeouts
	Logger   *slog.Logger
	// Now; default time.Now.
	Now func() time.Time
}

// Diagnoser diagnoses failed and stalled boots.
type Diagnoser struct {
	cfg Config
	// looked is when Sweep last read the hops of a session that kept busy
	// (MAC -> time), so that a boot in a loop is found without reading every
	// busy session at every sweep. Only Sweep uses it.
	looked map[string]time.Time
	// Diagnoses counts the diagnoses this replica recorded, by class.
	Diagnoses *prometheus.CounterVec
}

// New returns a Diagnoser.
func New(cfg Config) *Diagnoser {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Diagnoser{cfg: cfg, looked: map[string]time.Time{}, Diagnoses: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bootchain_bootapi_boot_diagnoses_total",
		Help: "Failed or stalled boots diagnosed (and their jobs failed) by this replica, by class.",
	}, []string{"class"})}
}

// Run diagnoses sessions that fail, as the session cache sees them, until ctx
// ends.
func (d *Diagnoser) Run(ctx context.Context) error {
	cache := d.cfg.Sessions.Cache()
	each := func(it store.Item[*bootapiv1.BootSession]) {
		bs := it.Value
		switch {
		case bs.GetState() == bootapiv1.SessionState_SESSION_STATE_FAILED && bs.GetDiagnosis() == nil:
			d.act(ctx, it)
		case bs.GetDiagnosis() != nil && bs.GetJobId() != "":
			// The job may have reached the session after its diagnosis (the
			// dispatching replica's write and a download's failure race).
			if j, ok := d.cfg.State.ActiveJob(bs.GetMac()); ok && j.Value.GetId() == bs.GetJobId() && dispatchedIn(j.Value, bs) {
				if err := d.failJob(ctx, j.Value.GetId(), bs.GetDiagnosis()); err != nil && ctx.Err() == nil {
					d.cfg.Logger.Warn("job not failed", "mac", bs.GetMac(), "job", j.Value.GetId(), "err", err)
				}
			}
		}
	}
	return cache.Follow(ctx, 1024, func(snap []store.Item[*bootapiv1.BootSession]) error {
		for _, it := range snap {
			each(it)
		}
		return nil
	}, func(batch []store.Event[*bootapiv1.BootSession]) error {
		for _, ev := range batch {
			if !ev.Deleted {
				each(ev.Item)
			}
		}
		return nil
	})
}

// Sweep diagnoses the active sessions whose stage timeout has passed, and
// those busy for longer than iPXE may take to ask for its script (a
// chain-load loop never goes quiet; each is read at most once per stall
// timeout). It returns how many this replica diagnosed.
func (d *Diagnoser) Sweep(ctx context.Context) int {
	now := d.cfg.Now()
	idle, t := d.cfg.Timeouts.Min(), d.cfg.Timeouts
	for mac, at := range d.looked {
		if now.Sub(at) >= t.Other {
			delete(d.looked, mac)
		}
	}
	// The record's update time trails the hops by at most a minute: a cheap
	// first filter before reading the hops.
	stale := d.cfg.Sessions.Cache().List(func(it store.Item[*bootapiv1.BootSession]) bool {
		bs := it.Value
		if bs.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE {
			return false
		}
		if now.Sub(bs.GetUpdateTime().AsTime()) >= idle {
			return true
		}
		_, seen := d.looked[bs.GetMac()]
		return !seen && now.Sub(bs.GetStartTime().AsTime()) >= t.IPXE
	})
	n := 0
	for _, it := range stale {
		if ctx.Err() != nil {
			break
		}
		d.looked[it.Value.GetMac()] = now
		if d.act(ctx, it) {
			n++
		}
	}
	return n
}

// Diagnose returns mac's latest session with its hops and the diagnosis it
// has: the one recorded, else one worked out now (nil while the boot goes on).
func (d *Diagnoser) Diagnose(ctx context.Context, mac string) (*bootapiv1.BootSession, *bootapiv1.Diagnosis, bool) {
	bs, ok := d.cfg.Sessions.Get(ctx, mac)
	if !ok {
		return nil, nil, false
	}
	if dg := bs.GetDiagnosis(); dg != nil {
		return bs, dg, true
	}
	return bs, diagnose.Of(bs, d.cfg.Now(), d.cfg.Timeouts), true
}

// act diagnoses the session it holds and, when there is something to say,
// writes the diagnosis over exactly that revision of the session and fails
// its job. It reports whether it did.
func (d *Diagnoser) act(ctx context.Context, it store.Item[*bootapiv1.BootSession]) bool {
	bs := proto.Clone(it.Value).(*bootapiv1.BootSession)
	mac := bs.GetMac()
	hops, err := d.cfg.Sessions.Hops(ctx, mac, bs.GetTraceId())
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("diagnosis: hops not read", "mac", mac, "err", err)
		}
		return false
	}
	bs.Hops = hops
	dg := diagnose.Of(bs, d.cfg.Now(), d.cfg.Timeouts)
	if dg == nil {
		return false
	}
	bs.Hops = nil
	bs.Diagnosis = dg
	if bs.GetState() == bootapiv1.SessionState_SESSION_STATE_ACTIVE {
		bs.State = bootapiv1.SessionState_SESSION_STATE_STALLED
		if diagnose.Failing(dg) || (len(hops) > 0 && hops[len(hops)-1].GetFailed()) {
			bs.State = bootapiv1.SessionState_SESSION_STATE_FAILED
		}
	}
	bs.FailedHop, bs.Message = dg.GetHop(), diagnose.Message(dg)
	// The session keeps its etcd lease (24 h after its last write).
	_, err = d.cfg.Store.Update(ctx, store.Key("sessions", it.Name), bs, it.ModRevision, clientv3.WithIgnoreLease())
	switch {
	case errors.Is(err, store.ErrConflict):
		return false // another replica acted, or the machine moved on: the next look decides
	case err != nil:
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("diagnosis not recorded", "mac", mac, "err", err)
		}
		return false
	}
	cls := diagnose.ClassName(dg.GetClass())
	d.Diagnoses.WithLabelValues(cls).Inc()
	log := d.cfg.Logger.With("mac", mac, "class", cls, "hop", dg.GetHop())
	log.Info("boot diagnosed", "cause", dg.GetCause())
	id := bs.GetJobId()
	if j, ok := d.cfg.State.ActiveJob(mac); id == "" && ok && dispatchedIn(j.Value, bs) {
		id = j.Value.GetId() // dispatched in this session, not recorded on it yet
	}
	if id != "" {
		if err := d.failJob(ctx, id, dg); err != nil && ctx.Err() == nil {
			log.Warn("job not failed", "job", id, "err", err)
		}
	}
	return true
}

// failJob fails job id, if it is still dispatched or running, with dg.
func (d *Diagnoser) failJob(ctx context.Context, id string, dg *bootapiv1.Diagnosis) error {
	_, _, err := d.cfg.State.Update(ctx, id, func(j *bootapiv1.Job) error {
		switch j.GetState() {
		case bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING:
		default:
			return errFinished
		}
		state.Finish(j, bootapiv1.JobState_JOB_STATE_FAILED, diagnose.Message(dg), d.cfg.Now())
		return nil
	})
	if errors.Is(err, errFinished) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fail job %s: %w", id, err)
	}
	return nil
}

var errFinished = errors.New("job already finished")

// dispatchedIn reports whether j was dispatched in bs's boot attempt (its
// traceparent is the session's) and is not finished.
func dispatchedIn(j *bootapiv1.Job, bs *bootapiv1.BootSession) bool {
	st := j.GetState()
	return (st == bootapiv1.JobState_JOB_STATE_DISPATCHED || st == bootapiv1.JobState_JOB_STATE_RUNNING) &&
		bs.GetTraceId() != "" && strings.Contains(j.GetTraceparent(), bs.GetTraceId())
}
