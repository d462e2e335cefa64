// Package state is bootapi's view of etcd: watch-fed caches of machines, profiles,
// jobs and sites (so the iPXE path never reads etcd), an index of each machine's
// active job, the job state machine as etcd transactions, and the writer of
// machine sightings.
//
// Invariant: a machine has at most one unfinished job. The key
// activejobs/<mac> names it; it is created in the same transaction as the job and
// removed in the same transaction that finishes the job, so two bootapi replicas
// can neither queue two jobs for one machine nor both dispatch one job.
package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Errors of the job state machine.
var (
	// ErrActiveJob: the machine already has an unfinished job.
	ErrActiveJob = errors.New("machine already has an unfinished job")
	// ErrJobState: the job is not in a state that allows the change.
	ErrJobState = errors.New("job state does not allow this")
)

// DefaultJobTimeout applies to jobs created without a timeout.
const DefaultJobTimeout = time.Hour

// State holds bootapi's caches.
type State struct {
	st       *store.Store
	log      *slog.Logger
	Machines *store.Cache[*bootapiv1.Machine]
	Profiles *store.Cache[*bootapiv1.Profile]
	Jobs     *store.Cache[*bootapiv1.Job]
	Sites    *store.Cache[*bootapiv1.Site]
	// Sightings writes machines' last-seen times, facts and discovered records.
	Sightings *Sightings
	// Leases are dhcpd's leases of every site (leases/<site>/<ip>), indexed by
	// MAC in leaseIdx: who holds which machine's address.
	Leases *store.Cache[*dhcpdv1.Lease]
	// Leases6 are dhcpd's DHCPv6 leases (leases6/<site>/<ip>), in the same
	// index: an IPv6 client's address holds its MAC's lease as an IPv4 one does.
	Leases6  *store.Cache[*dhcpdv1.Lease]
	leaseIdx *leaseIndex
	// discovered counts each site's discovered machines against Discovery.Cap.
	discovered *discoveredIndex
	// Discovery bounds what Sightings.Discovered records; set before Run.
	Discovery   Discovery
	defaultSite string

	mu     sync.RWMutex
	active map[string]string // mac -> unfinished job id, kept by indexJob

	// The decision's lookups, made once rather than per request.
	site    func(string) (*bootapiv1.Site, bool)
	profile func(string) (*bootapiv1.Profile, bool)
}

// New returns a State; call Run.
func New(st *store.Store, log *slog.Logger) *State {
	s := &State{
		st: st, log: log,
		Machines: store.NewCache(st, store.Prefix("machines"), func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, log),
		Profiles: store.NewCache(st, store.Prefix("profiles"), func() *bootapiv1.Profile { return &bootapiv1.Profile{} }, log),
		Jobs:     store.NewCache(st, store.Prefix("jobs"), func() *bootapiv1.Job { return &bootapiv1.Job{} }, log),
		Sites:    store.NewCache(st, store.Prefix("sites"), func() *bootapiv1.Site { return &bootapiv1.Site{} }, log),
		Leases:   store.NewCache(st, store.Prefix("leases"), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} }, log),
		Leases6:  store.NewCache(st, store.Prefix("leases6"), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} }, log),
		active:   map[string]string{},
		leaseIdx: newLeaseIndex(), discovered: newDiscoveredIndex(), Discovery: DefaultDiscovery,
	}
	s.Sightings = newSightings(s, log, time.Now)
	s.Jobs.OnEvent(s.indexJob)
	s.Leases.OnEvent(s.leaseIdx.onEvent)
	// Names never collide: an IPv4 and an IPv6 address never spell the same.
	s.Leases6.OnEvent(s.leaseIdx.onEvent)
	s.Machines.OnEvent(s.discovered.onMachine)
	s.site = func(name string) (*bootapiv1.Site, bool) {
		it, ok := s.Sites.Get(name)
		return it.Value, ok
	}
	s.profile = func(name string) (*bootapiv1.Profile, bool) {
		it, ok := s.Profiles.Get(name)
		return it.Value, ok
	}
	return s
}

// DecisionInput is what the boot decision reads about mac from the caches: its
// record (nil when unknown), its unfinished job and the site and profile
// lookups, with choice as the menu choice. The job's item (with its revision,
// for a dispatch's compare-and-swap) is returned beside it. The defaults
// (site, action) are the caller's to set. The script endpoint and the preview
// both start here, so that a preview reads what a request would.
func (s *State) DecisionInput(mac, choice string) (decide.Input, store.Item[*bootapiv1.Job]) {
	in := decide.Input{MAC: mac, MenuChoice: choice, Sites: s.site, Profiles: s.profile}
	if it, ok := s.Machines.Get(mac); ok {
		in.Machine = it.Value
	}
	jit, _ := s.ActiveJob(mac)
	in.Job = jit.Value
	return in, jit
}

// Store is the etcd store.
func (s *State) Store() *store.Store { return s.st }

// Run feeds the caches (and through the jobs cache the active-job index) and
// writes sightings until ctx ends.
func (s *State) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Sightings.run(ctx) })
	g.Go(func() error { return s.Machines.Run(ctx) })
	g.Go(func() error { return s.Profiles.Run(ctx) })
	g.Go(func() error { return s.Jobs.Run(ctx) })
	g.Go(func() error { return s.Sites.Run(ctx) })
	g.Go(func() error { return s.Leases.Run(ctx) })
	g.Go(func() error { return s.Leases6.Run(ctx) })
	return g.Wait()
}

// WaitReady waits for every cache's first load.
func (s *State) WaitReady(ctx context.Context) error {
	for _, w := range []func(context.Context) error{s.Machines.WaitReady, s.Profiles.WaitReady, s.Jobs.WaitReady, s.Sites.WaitReady, s.Leases.WaitReady, s.Leases6.WaitReady} {
		if err := w(ctx); err != nil {
			return err
		}
	}
	return nil
}

// indexJob keeps mac -> unfinished job, inside the jobs cache's update: a script
// request that sees a job write in the cache sees it in the index too.
func (s *State) indexJob(ev store.Event[*bootapiv1.Job]) {
	j := ev.Value
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ev.Deleted && Unfinished(j.GetState()) {
		s.active[j.GetMac()] = j.GetId()
	} else if s.active[j.GetMac()] == j.GetId() {
		delete(s.active, j.GetMac())
	}
}

// Unfinished reports whether a job in state st still waits for the machine.
func Unfinished(st bootapiv1.JobState) bool {
	switch st {
	case bootapiv1.JobState_JOB_STATE_PENDING, bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING:
		return true
	}
	return false
}

// ActiveJob returns the machine's unfinished job from the cache.
func (s *State) ActiveJob(mac string) (store.Item[*bootapiv1.Job], bool) {
	s.mu.RLock()
	id, ok := s.active[mac]
	s.mu.RUnlock()
	if !ok {
		return store.Item[*bootapiv1.Job]{}, false
	}
	return s.Jobs.Get(id)
}

// NewJobID returns a sortable unique ID: milliseconds since the epoch, then random.
func NewJobID(now time.Time) string {
	var r [5]byte
	rand.Read(r[:])
	return fmt.Sprintf("%011x%s", now.UnixMilli(), hex.EncodeToString(r[:]))
}

func activeKey(mac string) string { return store.Key("activejobs", mac) }

// JobKey is the etcd key of a job.
func JobKey(id string) string { return store.Key("jobs", id) }

// CreateJob queues a job for mac, in one transaction that checks the machine and
// profile exist and the machine has no unfinished job.
func (s *State) CreateJob(ctx context.Context, mac, profile string, timeout, releaseAfter time.Duration, now time.Time) (*bootapiv1.Job, int64, error) {
	if timeout <= 0 {
		timeout = DefaultJobTimeout
	}
	j := &bootapiv1.Job{
		Id: NewJobID(now), Mac: mac, Profile: profile, State: bootapiv1.JobState_JOB_STATE_PENDING,
		Timeout: durationpb.New(timeout), CreateTime: timestamppb.New(now), UpdateTime: timestamppb.New(now),
	}
	if releaseAfter > 0 {
		j.ReleaseTime = timestamppb.New(now.Add(releaseAfter))
	}
	jb, err := proto.Marshal(j)
	if err != nil {
		return nil, 0, err
	}
	ab, _ := proto.Marshal(wrapperspb.String(j.Id))
	mkey, pkey, akey, jkey := store.Key("machines", mac), store.Key("profiles", profile), activeKey(mac), JobKey(j.Id)
	tctx, cancel := s.st.WithTimeout(ctx)
	defer cancel()
	resp, err := s.st.Client().Txn(tctx).If(
		clientv3.Compare(clientv3.CreateRevision(mkey), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(pkey), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(akey), "=", 0),
	).Then(
		clientv3.OpPut(jkey, string(jb)), clientv3.OpPut(akey, string(ab)),
	).Else(
		clientv3.OpGet(mkey, clientv3.WithCountOnly()), clientv3.OpGet(pkey, clientv3.WithCountOnly()), clientv3.OpGet(akey),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("create job: %w", err)
	}
	if !resp.Succeeded {
		switch {
		case resp.Responses[0].GetResponseRange().Count == 0:
			return nil, 0, fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
		case resp.Responses[1].GetResponseRange().Count == 0:
			return nil, 0, fmt.Errorf("profile %s: %w", profile, store.ErrNotFound)
		default:
			other := &wrapperspb.StringValue{}
			if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) > 0 {
				proto.Unmarshal(kvs[0].Value, other)
			}
			return nil, 0, fmt.Errorf("%w: %s", ErrActiveJob, other.GetValue())
		}
	}
	return j, resp.Header.Revision, nil
}

// Transition writes next in place of the job at rev. When next is finished, the
// machine's active-job marker is removed in the same transaction.
func (s *State) Transition(ctx context.Context, next *bootapiv1.Job, rev int64) (int64, error) {
	b, err := proto.Marshal(next)
	if err != nil {
		return 0, err
	}
	jkey, akey := JobKey(next.GetId()), activeKey(next.GetMac())
	ops := []clientv3.Op{clientv3.OpPut(jkey, string(b))}
	if !Unfinished(next.GetState()) {
		ab, _ := proto.Marshal(wrapperspb.String(next.GetId()))
		// Remove the marker only if it is this job's.
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(akey), "=", string(ab))},
			[]clientv3.Op{clientv3.OpDelete(akey)}, nil))
	}
	tctx, cancel := s.st.WithTimeout(ctx)
	defer cancel()
	resp, err := s.st.Client().Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(jkey), "=", rev)).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("job %s: %w", next.GetId(), err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("job %s: %w", next.GetId(), store.ErrConflict)
	}
	return resp.Header.Revision, nil
}

// Update applies fn to the latest stored job and writes it, retrying when another
// writer got there first. fn returns ErrJobState (wrapped) to refuse.
func (s *State) Update(ctx context.Context, id string, fn func(j *bootapiv1.Job) error) (*bootapiv1.Job, int64, error) {
	for attempt := 0; attempt < 16; attempt++ {
		j := &bootapiv1.Job{}
		rev, err := s.st.Get(ctx, JobKey(id), j)
		if err != nil {
			return nil, 0, err
		}
		if err := fn(j); err != nil {
			return nil, 0, err
		}
		nrev, err := s.Transition(ctx, j, rev)
		if errors.Is(err, store.ErrConflict) {
			if err := store.RetryWait(ctx, attempt); err != nil {
				return nil, 0, err
			}
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		return j, nrev, nil
	}
	return nil, 0, fmt.Errorf("job %s: %w", id, store.ErrConflict)
}

// DeleteMachine removes a machine and cancels its unfinished job.
func (s *State) DeleteMachine(ctx context.Context, mac string, now time.Time) error {
	if it, ok := s.ActiveJob(mac); ok {
		_, _, err := s.Update(ctx, it.Value.GetId(), func(j *bootapiv1.Job) error {
			if !Unfinished(j.GetState()) {
				return nil
			}
			Finish(j, bootapiv1.JobState_JOB_STATE_CANCELED, "machine deleted", now)
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return s.st.Delete(ctx, store.Key("machines", mac), 0)
}

// Finish moves j to a final state.
func Finish(j *bootapiv1.Job, st bootapiv1.JobState, msg string, now time.Time) {
	j.State, j.Message = st, msg
	j.UpdateTime, j.FinishTime = timestamppb.New(now), timestamppb.New(now)
}

// ExpireJobs expires every dispatched or running job past its deadline. Any replica
// may run it: each change is a compare-and-swap.
func (s *State) ExpireJobs(ctx context.Context, now time.Time) (int, error) {
	n := 0
	for _, it := range s.Jobs.List(func(it store.Item[*bootapiv1.Job]) bool {
		st := it.Value.GetState()
		return (st == bootapiv1.JobState_JOB_STATE_DISPATCHED || st == bootapiv1.JobState_JOB_STATE_RUNNING) &&
			it.Value.GetDeadlineTime() != nil && now.After(it.Value.GetDeadlineTime().AsTime())
	}) {
		j := proto.Clone(it.Value).(*bootapiv1.Job)
		Finish(j, bootapiv1.JobState_JOB_STATE_EXPIRED, fmt.Sprintf("no final report within %s of dispatch", j.GetTimeout().AsDuration()), now)
		_, err := s.Transition(ctx, j, it.ModRevision)
		switch {
		case err == nil:
			n++
		case errors.Is(err, store.ErrConflict):
			// Changed meanwhile (a report arrived): the next sweep looks again.
		default:
			return n, err
		}
	}
	return n, nil
}
