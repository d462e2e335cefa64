package grpcapi

import (
	"context"
	"errors"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/grpc"
)

// AuditAPI serves the audit log (pkg/audit) read from etcd: the log is written
// by every service, so it is read where it is stored, not from a cache.
type AuditAPI struct {
	bootapiv1.UnimplementedAuditServiceServer
	st *store.Store
}

// NewAudit returns the AuditService on st.
func NewAudit(st *store.Store) *AuditAPI { return &AuditAPI{st: st} }

// Register adds the service to s.
func (a *AuditAPI) Register(s *grpc.Server) { bootapiv1.RegisterAuditServiceServer(s, a) }

func (a *AuditAPI) ListAuditEvents(ctx context.Context, req *bootapiv1.ListAuditEventsRequest) (*bootapiv1.ListAuditEventsResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, apierr.InvalidArgument("page_size", "must not be negative")
	}
	q := audit.Query{
		Identity: req.GetIdentity(), Action: req.GetAction(), Resource: req.GetResource(),
		PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	}
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, apierr.InvalidArgument("since", "%v", err)
		}
		q.Since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		if err := req.GetUntil().CheckValid(); err != nil {
			return nil, apierr.InvalidArgument("until", "%v", err)
		}
		q.Until = req.GetUntil().AsTime()
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return nil, apierr.InvalidArgument("until", "must be after since")
	}
	// A caller limited to sites sees only their events.
	if id, ok := auth.FromContext(ctx); ok {
		q.Sites = id.Sites
	}
	evs, next, err := audit.List(ctx, a.st, q)
	if errors.Is(err, audit.ErrPageToken) {
		return nil, apierr.InvalidArgument("page_token", "not a token this service handed out")
	}
	if err != nil {
		return nil, apierr.FromError(err)
	}
	return &bootapiv1.ListAuditEventsResponse{Events: evs, NextPageToken: next}, nil
}
