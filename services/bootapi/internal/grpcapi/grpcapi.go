// Package grpcapi implements bootapi's gRPC services: machines, profiles, jobs,
// sessions and sites. Every write validates its input and answers InvalidArgument
// naming the field; reads come from the watch-fed caches after waiting for the
// caller's own earlier writes.
package grpcapi

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
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
	diagnose DiagnoseFunc   // nil: DiagnoseMachine is Unimplemented
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
