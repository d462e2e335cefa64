package httpapi

import (
	"context"
	"errors"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"
)

// auditTimeout bounds how long an answer waits for its audit event.
const auditTimeout = 5 * time.Second

// auditDispatch records a job's dispatch; the script goes out after it. A
// failure to record is logged, not answered: the machine could do nothing
// about it, and the job is dispatched already.
func (h *Handler) auditDispatch(ctx context.Context, peer, mac, site, jobID string, rev int64) {
	if h.cfg.Audit == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	err := h.cfg.Audit.Record(ctx, audit.Event{
		Identity: "machine:" + mac, Action: audit.ActionDispatch, Resource: mac, Site: site,
		Peer: peer, Outcome: audit.OutcomeOK, Revision: rev, Detail: "job " + jobID,
	})
	h.logAudit("dispatch", err, "mac", mac, "job", jobID)
}

// logAudit logs an event that Record did not report written: queued and
// still being written when the answer stopped waiting for it (etcd slow), else
// lost (no room among the events waiting, or a write that failed for good).
func (h *Handler) logAudit(what string, err error, args ...any) {
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, audit.ErrFull):
		h.log.Warn(what+" answered before its audit event was written (etcd slow; still writing it)", args...)
	default:
		h.log.Error(what+" not in the audit log", append(args, "err", err)...)
	}
}

// auditCallback records an installer's report on job id, accepted (err nil)
// or refused; refusals count against the audit log's rate limit, since anyone
// can send them. mac is the job's machine when known.
func (h *Handler) auditCallback(ctx context.Context, rc *fasthttp.RequestCtx, id, mac, state string, httpCode int, err error, rev int64) {
	if h.cfg.Audit == nil {
		return
	}
	ev := audit.Event{
		Identity: audit.Anonymous, Action: audit.ActionCallback, Resource: id,
		Peer: rc.RemoteAddr().String(), Outcome: audit.OutcomeOK, Revision: rev, Detail: "state " + state,
	}
	if mac != "" {
		ev.Identity = "machine:" + mac
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err == nil {
		err = h.cfg.Audit.Record(ctx, ev)
	} else {
		ev.Revision = 0
		ev.Outcome = callbackOutcome(httpCode, err).String()
		_, err = h.cfg.Audit.RecordRefused(ctx, ev)
	}
	h.logAudit("callback", err, "job", id)
}

// callbackOutcome names a refused report's outcome as the gRPC API would.
func callbackOutcome(httpCode int, err error) codes.Code {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return codes.NotFound
	case httpCode == fasthttp.StatusForbidden:
		return codes.PermissionDenied
	case httpCode == fasthttp.StatusConflict:
		return codes.FailedPrecondition
	}
	return codes.Unavailable
}
