// Package grpcapi implements bootapi's gRPC services: machines, profiles, jobs,
// sessions and sites. Every write validates its input and answers InvalidArgument
// naming the field; reads come from the watch-fed caches after waiting for the
// caller's own earlier writes.
package grpcapi

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/artifactref"
	"github.com/bootchain/bootchain/pkg/auth"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// API implements every bootapi gRPC service.
type API struct {
	bootapiv1.UnimplementedMachineServiceServer
	bootapiv1.UnimplementedProfileServiceServer
	bootapiv1.UnimplementedJobServiceServer
	bootapiv1.UnimplementedSessionServiceServer
	bootapiv1.UnimplementedSiteServiceServer

	st       *state.State
	sessions *session.Recorder
	now      func() time.Time
	preview  *PreviewConfig // nil: PreviewMachine is Unimplemented
}

// New returns the API.
func New(st *state.State, sessions *session.Recorder, now func() time.Time) *API {
	if now == nil {
		now = time.Now
	}
	return &API{st: st, sessions: sessions, now: now}
}

// Register adds every service to s.
func (a *API) Register(s *grpc.Server) {
	bootapiv1.RegisterMachineServiceServer(s, a)
	bootapiv1.RegisterProfileServiceServer(s, a)
	bootapiv1.RegisterJobServiceServer(s, a)
	bootapiv1.RegisterSessionServiceServer(s, a)
	bootapiv1.RegisterSiteServiceServer(s, a)
}

func (a *API) store() *store.Store { return a.st.Store() }

// ---- machines

func (a *API) RegisterMachine(ctx context.Context, req *bootapiv1.RegisterMachineRequest) (*bootapiv1.RegisterMachineResponse, error) {
	in := req.GetMachine()
	if in == nil {
		return nil, apierr.InvalidArgument("machine", "required")
	}
	mac, err := validate.MAC("machine.mac", in.GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	m := proto.Clone(in).(*bootapiv1.Machine)
	m.Mac, m.Discovered, m.Facts, m.LastSeenTime = mac, false, nil, nil
	if err := a.checkMachine(m); err != nil {
		return nil, err
	}
	if err := auth.RequireSite(ctx, a.machineSite(m)); err != nil {
		return nil, err
	}
	now := timestamppb.New(a.now())
	out, rev, err := store.Mutate(ctx, a.store(), store.Key("machines", mac), newMachine, func(cur *bootapiv1.Machine, exists bool) (*bootapiv1.Machine, error) {
		if exists && !cur.GetDiscovered() {
			return nil, status.Errorf(codes.AlreadyExists, "machine %s is already registered", mac)
		}
		if exists {
			// Promoting a discovered machine takes it from the site it was seen at.
			if err := auth.RequireSite(ctx, a.machineSite(cur)); err != nil {
				return nil, err
			}
		}
		next := proto.Clone(m).(*bootapiv1.Machine)
		next.CreateTime, next.UpdateTime = now, now
		if exists {
			// Promote a discovered machine, keeping what it told us.
			next.CreateTime, next.Facts, next.LastSeenTime = cur.GetCreateTime(), cur.GetFacts(), cur.GetLastSeenTime()
		}
		return next, nil
	})
	if err != nil {
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Machines.WaitRevision, rev)
	return &bootapiv1.RegisterMachineResponse{Machine: out}, nil
}

func newMachine() *bootapiv1.Machine { return &bootapiv1.Machine{} }

func (a *API) checkMachine(m *bootapiv1.Machine) error {
	if err := validate.Machine(m); err != nil {
		return apierr.FromError(err)
	}
	if p := m.GetDefaultProfile(); p != "" {
		if _, ok := a.st.Profiles.Get(p); !ok {
			return apierr.InvalidArgument("machine.default_profile", "profile %q does not exist", p)
		}
	}
	return nil
}

// wait lets a caller read its own write: it waits (briefly) for the cache to reach
// the revision of the write.
func (a *API) wait(ctx context.Context, w func(context.Context, int64) error, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	w(ctx, rev)
}

// deleted runs del and, like every write, answers only once w's cache has the
// deletion: a client that deletes a site's last machine and then the site is
// not told the site still has machines. The revision also reaches ctx's own
// sink (the audit log's).
func (a *API) deleted(ctx context.Context, w func(context.Context, int64) error, del func(context.Context) error) error {
	dctx, revs := store.WithRevisions(ctx)
	err := del(dctx)
	if rev := revs.Last(); rev > 0 {
		store.ReportRevision(ctx, rev)
		a.wait(ctx, w, rev)
	}
	return err
}

func (a *API) GetMachine(ctx context.Context, req *bootapiv1.GetMachineRequest) (*bootapiv1.GetMachineResponse, error) {
	mac, err := validate.MAC("mac", req.GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	it, ok := a.st.Machines.Get(mac)
	if !ok {
		return nil, apierr.NotFound("machine", mac)
	}
	if err := auth.RequireSite(ctx, a.machineSite(it.Value)); err != nil {
		return nil, err
	}
	return &bootapiv1.GetMachineResponse{Machine: it.Value}, nil
}

func (a *API) ListMachines(ctx context.Context, req *bootapiv1.ListMachinesRequest) (*bootapiv1.ListMachinesResponse, error) {
	sel, err := validate.LabelSelector("label_selector", req.GetLabelSelector())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	if err := validate.Site("site", req.GetSite()); err != nil {
		return nil, apierr.FromError(err)
	}
	out := &bootapiv1.ListMachinesResponse{}
	for _, it := range a.st.Machines.List(nil) {
		m := it.Value
		if req.GetSite() != "" && m.GetSite() != req.GetSite() || !auth.MaySite(ctx, a.machineSite(m)) {
			continue
		}
		if req.Discovered != nil && m.GetDiscovered() != req.GetDiscovered() {
			continue
		}
		if !validate.MatchLabels(m.GetLabels(), sel) {
			continue
		}
		out.Machines = append(out.Machines, m)
	}
	return out, nil
}

var machinePaths = map[string]func(dst, src *bootapiv1.Machine){
	"site":             func(d, s *bootapiv1.Machine) { d.Site = s.Site },
	"hostname":         func(d, s *bootapiv1.Machine) { d.Hostname = s.Hostname },
	"labels":           func(d, s *bootapiv1.Machine) { d.Labels = s.Labels },
	"default_action":   func(d, s *bootapiv1.Machine) { d.DefaultAction = s.DefaultAction },
	"default_profile":  func(d, s *bootapiv1.Machine) { d.DefaultProfile = s.DefaultProfile },
	"netboot_disabled": func(d, s *bootapiv1.Machine) { d.NetbootDisabled = s.NetbootDisabled },
	"ipv4_address":     func(d, s *bootapiv1.Machine) { d.Ipv4Address = s.Ipv4Address },
	"boot_file":        func(d, s *bootapiv1.Machine) { d.BootFile = s.BootFile },
}

func maskPaths(field string, mask *fieldmaskpb.FieldMask, known []string) ([]string, error) {
	if len(mask.GetPaths()) == 0 {
		return known, nil
	}
	for _, p := range mask.GetPaths() {
		if !slices.Contains(known, p) {
			return nil, apierr.InvalidArgument(field, "unknown or read-only field %q (writable: %s)", p, strings.Join(known, ", "))
		}
	}
	return mask.GetPaths(), nil
}

func (a *API) UpdateMachine(ctx context.Context, req *bootapiv1.UpdateMachineRequest) (*bootapiv1.UpdateMachineResponse, error) {
	mac, err := validate.MAC("machine.mac", req.GetMachine().GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	paths, err := maskPaths("update_mask", req.GetUpdateMask(), slices.Sorted(maps.Keys(machinePaths)))
	if err != nil {
		return nil, err
	}
	out, rev, err := store.Mutate(ctx, a.store(), store.Key("machines", mac), newMachine, func(cur *bootapiv1.Machine, exists bool) (*bootapiv1.Machine, error) {
		if !exists {
			return nil, apierr.NotFound("machine", mac)
		}
		if err := auth.RequireSite(ctx, a.machineSite(cur)); err != nil {
			return nil, err
		}
		for _, p := range paths {
			machinePaths[p](cur, req.GetMachine())
		}
		if err := a.checkMachine(cur); err != nil {
			return nil, err
		}
		// Moving a machine needs the new site too.
		if err := auth.RequireSite(ctx, a.machineSite(cur)); err != nil {
			return nil, err
		}
		cur.UpdateTime = timestamppb.New(a.now())
		return cur, nil
	})
	if err != nil {
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Machines.WaitRevision, rev)
	return &bootapiv1.UpdateMachineResponse{Machine: out}, nil
}

func (a *API) DeleteMachine(ctx context.Context, req *bootapiv1.DeleteMachineRequest) (*bootapiv1.DeleteMachineResponse, error) {
	mac, err := validate.MAC("mac", req.GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	if err := a.requireMAC(ctx, mac); err != nil {
		return nil, err
	}
	if err := a.deleted(ctx, a.st.Machines.WaitRevision, func(ctx context.Context) error { return a.st.DeleteMachine(ctx, mac, a.now()) }); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, apierr.NotFound("machine", mac)
		}
		return nil, apierr.FromError(err)
	}
	return &bootapiv1.DeleteMachineResponse{}, nil
}

// ---- profiles

func newProfile() *bootapiv1.Profile { return &bootapiv1.Profile{} }

func checkProfile(p *bootapiv1.Profile) error {
	if err := validate.Profile(p); err != nil {
		return apierr.FromError(err)
	}
	// Render the template once with sample data so a profile that can never boot
	// is refused now, not at 3 a.m. on a machine's console.
	var td script.TemplateData
	td.Machine.MAC, td.Machine.Hostname, td.Machine.Site = "52:54:00:00:00:01", "host", "site"
	td.Profile.Name, td.Job.ID = p.GetName(), "job"
	if _, err := script.Cmdline(p.GetCmdline(), td); err != nil {
		return apierr.InvalidArgument("profile.cmdline", "%v", err)
	}
	return nil
}

// checkArtifacts refuses a profile whose kernel or initrds (those of fields,
// "kernel" and "initrds") name an artifact artifactstore's catalog does not
// have: better now than a 404 on a machine's console. A URL is not checked.
func (a *API) checkArtifacts(ctx context.Context, p *bootapiv1.Profile, fields ...string) error {
	check := func(field string, r *bootapiv1.ArtifactRef) error {
		if r.GetArtifact() == "" {
			return nil
		}
		ref, err := artifactref.Parse(r.GetArtifact())
		if err != nil {
			return apierr.InvalidArgument(field, "%v", err)
		}
		art := &artifactv1.Artifact{}
		_, err = a.store().Get(ctx, store.Key("artifacts", ref.Name), art)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return apierr.InvalidArgument(field, "artifact %q does not exist", ref.Name)
		case err != nil:
			return apierr.FromError(err)
		case ref.Pinned() && art.GetSha256() != ref.SHA256:
			// A pin that does not match now could never boot.
			return apierr.InvalidArgument(field, "artifact %q holds sha256 %s, not the pinned %s", ref.Name, art.GetSha256(), ref.SHA256)
		}
		return nil
	}
	for _, f := range fields {
		switch f {
		case "kernel":
			if err := check("profile.kernel", p.GetKernel()); err != nil {
				return err
			}
		case "initrds":
			for i, r := range p.GetInitrds() {
				if err := check("profile.initrds["+strconv.Itoa(i)+"]", r); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (a *API) CreateProfile(ctx context.Context, req *bootapiv1.CreateProfileRequest) (*bootapiv1.CreateProfileResponse, error) {
	if req.GetProfile() == nil {
		return nil, apierr.InvalidArgument("profile", "required")
	}
	p := proto.Clone(req.GetProfile()).(*bootapiv1.Profile)
	if err := checkProfile(p); err != nil {
		return nil, err
	}
	if err := a.checkArtifacts(ctx, p, "kernel", "initrds"); err != nil {
		return nil, err
	}
	now := timestamppb.New(a.now())
	p.CreateTime, p.UpdateTime = now, now
	rev, err := a.store().Create(ctx, store.Key("profiles", p.GetName()), p)
	if errors.Is(err, store.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "profile %q already exists", p.GetName())
	}
	if err != nil {
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Profiles.WaitRevision, rev)
	return &bootapiv1.CreateProfileResponse{Profile: p}, nil
}

func (a *API) GetProfile(ctx context.Context, req *bootapiv1.GetProfileRequest) (*bootapiv1.GetProfileResponse, error) {
	if err := validate.Name("name", req.GetName()); err != nil {
		return nil, apierr.FromError(err)
	}
	it, ok := a.st.Profiles.Get(req.GetName())
	if !ok {
		return nil, apierr.NotFound("profile", req.GetName())
	}
	return &bootapiv1.GetProfileResponse{Profile: it.Value}, nil
}

func (a *API) ListProfiles(ctx context.Context, req *bootapiv1.ListProfilesRequest) (*bootapiv1.ListProfilesResponse, error) {
	sel, err := validate.LabelSelector("label_selector", req.GetLabelSelector())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	out := &bootapiv1.ListProfilesResponse{}
	for _, it := range a.st.Profiles.List(func(it store.Item[*bootapiv1.Profile]) bool { return validate.MatchLabels(it.Value.GetLabels(), sel) }) {
		out.Profiles = append(out.Profiles, it.Value)
	}
	return out, nil
}

var profilePaths = map[string]func(dst, src *bootapiv1.Profile){
	"description": func(d, s *bootapiv1.Profile) { d.Description = s.Description },
	"kernel":      func(d, s *bootapiv1.Profile) { d.Kernel = s.Kernel },
	"initrds":     func(d, s *bootapiv1.Profile) { d.Initrds = s.Initrds },
	"cmdline":     func(d, s *bootapiv1.Profile) { d.Cmdline = s.Cmdline },
	"labels":      func(d, s *bootapiv1.Profile) { d.Labels = s.Labels },
	"menu":        func(d, s *bootapiv1.Profile) { d.Menu = s.Menu },
}

func (a *API) UpdateProfile(ctx context.Context, req *bootapiv1.UpdateProfileRequest) (*bootapiv1.UpdateProfileResponse, error) {
	name := req.GetProfile().GetName()
	if err := validate.Name("profile.name", name); err != nil {
		return nil, apierr.FromError(err)
	}
	paths, err := maskPaths("update_mask", req.GetUpdateMask(), slices.Sorted(maps.Keys(profilePaths)))
	if err != nil {
		return nil, err
	}
	out, rev, err := store.Mutate(ctx, a.store(), store.Key("profiles", name), newProfile, func(cur *bootapiv1.Profile, exists bool) (*bootapiv1.Profile, error) {
		if !exists {
			return nil, apierr.NotFound("profile", name)
		}
		for _, p := range paths {
			profilePaths[p](cur, req.GetProfile())
		}
		if err := checkProfile(cur); err != nil {
			return nil, err
		}
		// Only what changes: a profile whose artifact went away can still
		// have its description changed.
		if err := a.checkArtifacts(ctx, cur, paths...); err != nil {
			return nil, err
		}
		cur.UpdateTime = timestamppb.New(a.now())
		return cur, nil
	})
	if err != nil {
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Profiles.WaitRevision, rev)
	return &bootapiv1.UpdateProfileResponse{Profile: out}, nil
}

func (a *API) DeleteProfile(ctx context.Context, req *bootapiv1.DeleteProfileRequest) (*bootapiv1.DeleteProfileResponse, error) {
	name := req.GetName()
	if err := validate.Name("name", name); err != nil {
		return nil, apierr.FromError(err)
	}
	for _, it := range a.st.Jobs.List(nil) {
		if it.Value.GetProfile() == name && state.Unfinished(it.Value.GetState()) {
			return nil, apierr.FailedPrecondition("name", "profile %q is used by unfinished job %s", name, it.Value.GetId())
		}
	}
	for _, it := range a.st.Machines.List(nil) {
		if it.Value.GetDefaultProfile() == name {
			return nil, apierr.FailedPrecondition("name", "profile %q is the default of machine %s", name, it.Value.GetMac())
		}
	}
	for _, it := range a.st.Sites.List(nil) {
		if it.Value.GetDefaultProfile() == name {
			return nil, apierr.FailedPrecondition("name", "profile %q is the default of site %s", name, it.Value.GetName())
		}
	}
	if err := a.deleted(ctx, a.st.Profiles.WaitRevision, func(ctx context.Context) error { return a.store().Delete(ctx, store.Key("profiles", name), 0) }); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, apierr.NotFound("profile", name)
		}
		return nil, apierr.FromError(err)
	}
	return &bootapiv1.DeleteProfileResponse{}, nil
}

// ---- jobs

// public strips what the API never returns.
func public(j *bootapiv1.Job) *bootapiv1.Job {
	if len(j.GetTokenHash()) == 0 {
		return j
	}
	c := proto.Clone(j).(*bootapiv1.Job)
	c.TokenHash = nil
	return c
}

func (a *API) CreateJob(ctx context.Context, req *bootapiv1.CreateJobRequest) (*bootapiv1.CreateJobResponse, error) {
	mac, err := validate.MAC("mac", req.GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	if err := validate.Name("profile", req.GetProfile()); err != nil {
		return nil, apierr.FromError(err)
	}
	timeout := req.GetTimeout().AsDuration()
	if req.GetTimeout() != nil && (timeout < time.Second || timeout > 7*24*time.Hour) {
		return nil, apierr.InvalidArgument("timeout", "want between 1s and 168h, got %s", timeout)
	}
	if err := a.requireMAC(ctx, mac); err != nil {
		return nil, err
	}
	j, rev, err := a.st.CreateJob(ctx, mac, req.GetProfile(), timeout, a.now())
	switch {
	case errors.Is(err, state.ErrActiveJob):
		return nil, apierr.InvalidArgument("mac", "machine %s already has an unfinished job (%v); cancel it first", mac, strings.TrimPrefix(err.Error(), state.ErrActiveJob.Error()+": "))
	case errors.Is(err, store.ErrNotFound) && strings.HasPrefix(err.Error(), "machine"):
		return nil, apierr.InvalidArgument("mac", "machine %s is not known (register it, or let it boot once to be discovered)", mac)
	case errors.Is(err, store.ErrNotFound):
		return nil, apierr.InvalidArgument("profile", "profile %q does not exist", req.GetProfile())
	case err != nil:
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Jobs.WaitRevision, rev)
	return &bootapiv1.CreateJobResponse{Job: public(j)}, nil
}

func (a *API) GetJob(ctx context.Context, req *bootapiv1.GetJobRequest) (*bootapiv1.GetJobResponse, error) {
	if req.GetId() == "" {
		return nil, apierr.InvalidArgument("id", "required")
	}
	it, ok := a.st.Jobs.Get(req.GetId())
	if !ok {
		return nil, apierr.NotFound("job", req.GetId())
	}
	if err := a.requireMAC(ctx, it.Value.GetMac()); err != nil {
		return nil, err
	}
	return &bootapiv1.GetJobResponse{Job: public(it.Value)}, nil
}

func (a *API) ListJobs(ctx context.Context, req *bootapiv1.ListJobsRequest) (*bootapiv1.ListJobsResponse, error) {
	mac := ""
	if req.GetMac() != "" {
		var err error
		if mac, err = validate.MAC("mac", req.GetMac()); err != nil {
			return nil, apierr.FromError(err)
		}
	}
	want := map[bootapiv1.JobState]bool{}
	for _, s := range req.GetStates() {
		if _, ok := bootapiv1.JobState_name[int32(s)]; !ok || s == bootapiv1.JobState_JOB_STATE_UNSPECIFIED {
			return nil, apierr.InvalidArgument("states", "unknown state %d", s)
		}
		want[s] = true
	}
	items := a.st.Jobs.List(func(it store.Item[*bootapiv1.Job]) bool {
		return (mac == "" || it.Value.GetMac() == mac) && (len(want) == 0 || want[it.Value.GetState()]) && a.mayMAC(ctx, it.Value.GetMac())
	})
	out := &bootapiv1.ListJobsResponse{}
	for i := len(items) - 1; i >= 0; i-- { // IDs sort by creation time: newest first
		out.Jobs = append(out.Jobs, public(items[i].Value))
	}
	return out, nil
}

func (a *API) CancelJob(ctx context.Context, req *bootapiv1.CancelJobRequest) (*bootapiv1.CancelJobResponse, error) {
	if req.GetId() == "" {
		return nil, apierr.InvalidArgument("id", "required")
	}
	j, rev, err := a.st.Update(ctx, req.GetId(), func(j *bootapiv1.Job) error {
		if err := a.requireMAC(ctx, j.GetMac()); err != nil {
			return err
		}
		if !state.Unfinished(j.GetState()) {
			return apierr.FailedPrecondition("id", "job %s is already %s", j.GetId(), strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_")))
		}
		state.Finish(j, bootapiv1.JobState_JOB_STATE_CANCELED, "canceled by operator", a.now())
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound("job", req.GetId())
	}
	if err != nil {
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Jobs.WaitRevision, rev)
	return &bootapiv1.CancelJobResponse{Job: public(j)}, nil
}

func (a *API) WatchJobs(req *bootapiv1.WatchJobsRequest, stream grpc.ServerStreamingServer[bootapiv1.WatchJobsResponse]) error {
	mac := ""
	if req.GetMac() != "" {
		var err error
		if mac, err = validate.MAC("mac", req.GetMac()); err != nil {
			return apierr.FromError(err)
		}
	}
	match := func(j *bootapiv1.Job) bool {
		return (mac == "" || j.GetMac() == mac) && (req.GetId() == "" || j.GetId() == req.GetId()) && a.mayMAC(stream.Context(), j.GetMac())
	}
	synced := false
	err := a.st.Jobs.Follow(stream.Context(), 1024, func(snap []store.Item[*bootapiv1.Job]) error {
		if synced {
			// A second snapshot would repeat jobs and miss deletions: the client
			// starts over instead.
			return errWatchBehind
		}
		synced = true
		for _, it := range snap {
			if match(it.Value) {
				if err := stream.Send(&bootapiv1.WatchJobsResponse{Job: public(it.Value)}); err != nil {
					return err
				}
			}
		}
		return nil
	}, func(batch []store.Event[*bootapiv1.Job]) error {
		for _, ev := range batch {
			if match(ev.Value) {
				if err := stream.Send(&bootapiv1.WatchJobsResponse{Job: public(ev.Value), Deleted: ev.Deleted}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if errors.Is(err, errWatchBehind) {
		return status.Error(codes.ResourceExhausted, "watcher fell behind; watch again")
	}
	return err
}

var errWatchBehind = errors.New("watcher fell behind")

// ---- sessions

func (a *API) GetSession(ctx context.Context, req *bootapiv1.GetSessionRequest) (*bootapiv1.GetSessionResponse, error) {
	mac, err := validate.MAC("mac", req.GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	s, ok := a.sessions.Get(ctx, mac)
	if !ok {
		return nil, apierr.NotFound("boot session of machine", mac)
	}
	if err := auth.RequireSite(ctx, a.sessionSite(s)); err != nil {
		return nil, err
	}
	return &bootapiv1.GetSessionResponse{Session: s}, nil
}

func (a *API) ListSessions(ctx context.Context, req *bootapiv1.ListSessionsRequest) (*bootapiv1.ListSessionsResponse, error) {
	out := &bootapiv1.ListSessionsResponse{}
	for _, it := range a.sessions.Cache().List(nil) {
		if req.GetState() != bootapiv1.SessionState_SESSION_STATE_UNSPECIFIED && it.Value.GetState() != req.GetState() {
			continue
		}
		if !auth.MaySite(ctx, a.sessionSite(it.Value)) {
			continue
		}
		out.Sessions = append(out.Sessions, it.Value)
	}
	sort.Slice(out.Sessions, func(i, j int) bool {
		return out.Sessions[i].GetStartTime().AsTime().After(out.Sessions[j].GetStartTime().AsTime())
	})
	return out, nil
}

// ---- sites

// checkSite validates a site about to be written.
func (a *API) checkSite(s *bootapiv1.Site) error {
	if err := validate.SiteRecord(s); err != nil {
		return apierr.FromError(err)
	}
	if p := s.GetDefaultProfile(); p != "" {
		if _, ok := a.st.Profiles.Get(p); !ok {
			return apierr.InvalidArgument("site.default_profile", "profile %q does not exist", p)
		}
	}
	return nil
}

// withRevision is a copy of a cached or stored site carrying its revision; the
// revision itself is never stored.
func withRevision(s *bootapiv1.Site, rev int64) *bootapiv1.Site {
	out := proto.Clone(s).(*bootapiv1.Site)
	out.Revision = rev
	return out
}

func (a *API) PutSite(ctx context.Context, req *bootapiv1.PutSiteRequest) (*bootapiv1.PutSiteResponse, error) {
	if req.GetSite() == nil {
		return nil, apierr.InvalidArgument("site", "required")
	}
	s := proto.Clone(req.GetSite()).(*bootapiv1.Site)
	s.Revision = 0
	if err := validate.SiteRecord(s); err != nil {
		return nil, apierr.FromError(err)
	}
	if err := auth.RequireSite(ctx, s.GetName()); err != nil {
		return nil, err
	}
	if err := a.checkSite(s); err != nil {
		return nil, err
	}
	s.UpdateTime = timestamppb.New(a.now())
	rev, err := a.store().Put(ctx, store.Key("sites", s.GetName()), s)
	if err != nil {
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Sites.WaitRevision, rev)
	return &bootapiv1.PutSiteResponse{Site: withRevision(s, rev)}, nil
}

// sitePaths are the update mask paths of a site. "dhcp" replaces all of the DHCP
// settings; "dhcp.<field>" one of them. Repeated fields (dhcp.subnets with their
// pools, routers and DNS servers) are replaced whole, as field masks define.
var sitePaths = map[string]func(dst, src *bootapiv1.Site){
	"default_action":   func(d, s *bootapiv1.Site) { d.DefaultAction = s.DefaultAction },
	"default_profile":  func(d, s *bootapiv1.Site) { d.DefaultProfile = s.DefaultProfile },
	"bootapi_url":      func(d, s *bootapiv1.Site) { d.BootapiUrl = s.BootapiUrl },
	"artifact_url":     func(d, s *bootapiv1.Site) { d.ArtifactUrl = s.ArtifactUrl },
	"callback_url":     func(d, s *bootapiv1.Site) { d.CallbackUrl = s.CallbackUrl },
	"tftp_server":      func(d, s *bootapiv1.Site) { d.TftpServer = s.TftpServer },
	"discovery_policy": func(d, s *bootapiv1.Site) { d.DiscoveryPolicy = s.DiscoveryPolicy },
	"extra_cmdline":    func(d, s *bootapiv1.Site) { d.ExtraCmdline = s.ExtraCmdline },
	"dhcp":             func(d, s *bootapiv1.Site) { d.Dhcp = s.Dhcp },
	"dhcp.mode":        dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.Mode = s.Mode }),
	"dhcp.subnets":     dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.Subnets = s.Subnets }),
	"dhcp.boot_files":  dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.BootFiles = s.BootFiles }),
	"dhcp.chainload_own_ipxe": dhcpPath(func(d, s *bootapiv1.SiteDhcp) {
		d.ChainloadOwnIpxe = s.ChainloadOwnIpxe
	}),
	"dhcp.unknown_clients": dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.UnknownClients = s.UnknownClients }),
	"dhcp.router_advertisements": dhcpPath(func(d, s *bootapiv1.SiteDhcp) {
		d.RouterAdvertisements = s.RouterAdvertisements
	}),
	"dhcp.lease_time":      dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.LeaseTime = s.LeaseTime }),
	"dhcp.relay_addresses": dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.RelayAddresses = s.RelayAddresses }),
	"dhcp.decline_quarantine": dhcpPath(func(d, s *bootapiv1.SiteDhcp) {
		d.DeclineQuarantine = s.DeclineQuarantine
	}),
}

// dhcpPath applies a mask path inside Site.dhcp, creating it when absent.
func dhcpPath(f func(d, s *bootapiv1.SiteDhcp)) func(d, s *bootapiv1.Site) {
	return func(d, s *bootapiv1.Site) {
		if d.Dhcp == nil {
			d.Dhcp = &bootapiv1.SiteDhcp{}
		}
		src := s.GetDhcp()
		if src == nil {
			src = &bootapiv1.SiteDhcp{}
		}
		f(d.Dhcp, src)
	}
}

// SitePaths lists the update mask paths UpdateSite accepts, sorted.
func SitePaths() []string { return slices.Sorted(maps.Keys(sitePaths)) }

func (a *API) UpdateSite(ctx context.Context, req *bootapiv1.UpdateSiteRequest) (*bootapiv1.UpdateSiteResponse, error) {
	name := req.GetSite().GetName()
	if err := validate.Site("site.name", name); err != nil || name == "" {
		return nil, apierr.InvalidArgument("site.name", "want a site name")
	}
	paths, err := maskPaths("update_mask", req.GetUpdateMask(), SitePaths())
	if err != nil {
		return nil, err
	}
	if req.GetRevision() < 0 {
		return nil, apierr.InvalidArgument("revision", "must not be negative")
	}
	key := store.Key("sites", name)
	for attempt := 0; ; attempt++ {
		cur := &bootapiv1.Site{}
		rev, err := a.store().Get(ctx, key, cur)
		if errors.Is(err, store.ErrNotFound) {
			// Before the site check would tell a site-limited caller which sites exist.
			if err := auth.RequireSite(ctx, name); err != nil {
				return nil, err
			}
			return nil, apierr.NotFound("site", name)
		}
		if err != nil {
			return nil, apierr.FromError(err)
		}
		if err := auth.RequireSite(ctx, cur.GetName()); err != nil {
			return nil, err
		}
		if want := req.GetRevision(); want != 0 && want != rev {
			return nil, status.Errorf(codes.Aborted, "site %q is at revision %d, not %d: read it again", name, rev, want)
		}
		for _, p := range paths {
			sitePaths[p](cur, req.GetSite())
		}
		cur.Name, cur.Revision = name, 0
		if err := a.checkSite(cur); err != nil {
			return nil, err
		}
		cur.UpdateTime = timestamppb.New(a.now())
		next, err := a.store().Update(ctx, key, cur, rev)
		if errors.Is(err, store.ErrConflict) && req.GetRevision() == 0 && attempt < 32 {
			// Someone else wrote in between: apply the mask to their version.
			if err := store.RetryWait(ctx, attempt); err != nil {
				return nil, apierr.FromError(err)
			}
			continue
		}
		if errors.Is(err, store.ErrConflict) {
			return nil, status.Errorf(codes.Aborted, "site %q changed concurrently: read it again", name)
		}
		if err != nil {
			return nil, apierr.FromError(err)
		}
		a.wait(ctx, a.st.Sites.WaitRevision, next)
		return &bootapiv1.UpdateSiteResponse{Site: withRevision(cur, next)}, nil
	}
}

func (a *API) GetSite(ctx context.Context, req *bootapiv1.GetSiteRequest) (*bootapiv1.GetSiteResponse, error) {
	if err := validate.Site("name", req.GetName()); err != nil || req.GetName() == "" {
		return nil, apierr.InvalidArgument("name", "want a site name")
	}
	if err := auth.RequireSite(ctx, req.GetName()); err != nil {
		return nil, err
	}
	it, ok := a.st.Sites.Get(req.GetName())
	if !ok {
		return nil, apierr.NotFound("site", req.GetName())
	}
	return &bootapiv1.GetSiteResponse{Site: withRevision(it.Value, it.ModRevision)}, nil
}

func (a *API) ListSites(ctx context.Context, req *bootapiv1.ListSitesRequest) (*bootapiv1.ListSitesResponse, error) {
	out := &bootapiv1.ListSitesResponse{}
	for _, it := range a.st.Sites.List(nil) {
		if auth.MaySite(ctx, it.Value.GetName()) {
			out.Sites = append(out.Sites, withRevision(it.Value, it.ModRevision))
		}
	}
	return out, nil
}

func (a *API) DeleteSite(ctx context.Context, req *bootapiv1.DeleteSiteRequest) (*bootapiv1.DeleteSiteResponse, error) {
	name := req.GetName()
	if err := validate.Site("name", name); err != nil || name == "" {
		return nil, apierr.InvalidArgument("name", "want a site name")
	}
	if err := auth.RequireSite(ctx, name); err != nil {
		return nil, err
	}
	for _, it := range a.st.Machines.List(nil) {
		if it.Value.GetSite() == name {
			return nil, apierr.FailedPrecondition("name", "site %q still has machines (e.g. %s)", name, it.Value.GetMac())
		}
	}
	if err := a.deleted(ctx, a.st.Sites.WaitRevision, func(ctx context.Context) error { return a.store().Delete(ctx, store.Key("sites", name), 0) }); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, apierr.NotFound("site", name)
		}
		return nil, apierr.FromError(err)
	}
	return &bootapiv1.DeleteSiteResponse{}, nil
}
