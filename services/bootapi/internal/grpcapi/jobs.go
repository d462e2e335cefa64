package grpcapi

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ---- jobs

// public strips what the API never returns.
func public(j *bootapiv1.Job) *bootapiv1.Job {
	if len(j.GetTokenHash()) == 0 && len(j.GetBootstrapTokenHash()) == 0 {
		return j
	}
	c := proto.Clone(j).(*bootapiv1.Job)
	c.TokenHash, c.BootstrapTokenHash, c.InstallerKeyHash = nil, nil, nil
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
	release := req.GetReleaseAfter().AsDuration()
	if req.GetReleaseAfter() != nil && (release < 0 || release > 7*24*time.Hour) {
		return nil, apierr.InvalidArgument("release_after", "want between 0s and 168h, got %s", release)
	}
	if err := a.requireMAC(ctx, mac); err != nil {
		return nil, err
	}
	j, rev, err := a.st.CreateJob(ctx, mac, req.GetProfile(), timeout, release, a.now())
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
