package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/diagnose"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// report takes an installer callback: form fields job (or the job query
// parameter), token (in the body only), state (running, succeeded, failed),
// message, progress.
//
// The token of the kernel command line is a bootstrap token: the job's first
// accepted report exchanges it for a fresh one, sent in the answer ("token
// <fresh>" on the second line), and from then on only the fresh one is
// accepted. So the token readable on /proc/cmdline is worth nothing once the
// installer has made its first report. A report must also come from the
// address the job was dispatched to, or from one that holds the machine's
// lease. A refused report changes nothing: not the job, not the boot session.
func (h *Handler) report(ctx context.Context, rc *fasthttp.RequestCtx) {
	if q, _ := url.ParseQuery(string(rc.URI().QueryString())); q.Has("token") {
		// A URL is logged by proxies and servers along the way: a token in it is
		// refused, whether it is right or not.
		h.Rejected.Add(1)
		httpError(rc, "token: send it in the POST body, not in the URL", fasthttp.StatusBadRequest)
		return
	}
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
	// progress is -1 when the report names none: the job keeps what it had,
	// and a success without one is complete (100).
	progress := int32(-1)
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
	ip := remoteIP(rc)
	now := h.cfg.Now()
	var code int
	var why, fresh string
	job, rev, err := h.cfg.State.Update(ctx, id, func(j *bootapiv1.Job) error {
		sum := tokenHash(token)
		if len(j.GetTokenHash()) == 0 || subtle.ConstantTimeCompare(sum[:], j.GetTokenHash()) != 1 {
			code, why = fasthttp.StatusForbidden, "token does not match this job"
			return errRefused
		}
		if !h.cfg.State.ReportFrom(j, ip, now) {
			code, why = fasthttp.StatusForbidden, "report from "+ip+": not the address the job was dispatched to, nor one holding its machine's lease"
			return errRefused
		}
		switch j.GetState() {
		case bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING:
		default:
			code, why = fasthttp.StatusConflict, "job is "+strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_"))+": reports are closed"
			return errRefused
		}
		if !j.GetTokenExchanged() {
			// Update may call this again after a conflict: each attempt draws its
			// own token, and the answer carries the one that was written.
			fresh = newToken()
			fh := tokenHash(fresh)
			j.TokenHash, j.TokenExchanged = fh[:], true
		} else {
			fresh = ""
		}
		switch {
		case progress >= 0:
			j.Progress = progress
		case st == bootapiv1.JobState_JOB_STATE_SUCCEEDED:
			j.Progress = 100
		}
		j.Reports = append(j.Reports, &bootapiv1.JobReport{State: st, Message: msg, Progress: j.GetProgress(), Time: timestamppb.New(now)})
		if len(j.Reports) > 100 {
			j.Reports = j.Reports[len(j.Reports)-100:]
		}
		j.Message, j.UpdateTime = msg, timestamppb.New(now)
		if st == bootapiv1.JobState_JOB_STATE_RUNNING {
			j.State = st
			return nil
		}
		state.Finish(j, st, msg, now)
		return nil
	})
	// audit (P6): every report on a job, accepted or refused, before the answer.
	// A refused report has no job from Update: the cache still knows its machine.
	known := job
	if known == nil {
		if jit, ok := h.cfg.State.Jobs.Get(id); ok {
			known = jit.Value
		}
	}
	h.auditCallback(ctx, rc, id, known.GetMac(), form.Get("state"), code, err, rev)
	switch {
	case errors.Is(err, errRefused):
		// Nothing is recorded for a refused report, not even a hop: whoever
		// sends one has no say in the machine's boot session.
		h.Rejected.Add(1)
		h.log.Warn("job report refused", "job", id, "client", ip, "why", why)
		httpError(rc, why, code)
		return
	case errors.Is(err, store.ErrNotFound):
		h.Rejected.Add(1)
		httpError(rc, "job: no such job", fasthttp.StatusNotFound)
		return
	case err != nil:
		h.log.Error("report not recorded", "job", id, "err", err)
		httpError(rc, "report not recorded, retry", fasthttp.StatusServiceUnavailable)
		return
	}
	h.Reports.Add(1)
	// As for dispatch: this replica reads its own write from here on.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	h.cfg.State.Jobs.WaitRevision(wctx, rev)
	cancel()
	// The callback is a hop of the session that dispatched the job (the
	// job's traceparent; the header only for a session of the same machine).
	tp := string(rc.Request.Header.Peek("traceparent"))
	if tp == "" {
		tp = job.GetTraceparent()
	}
	if sess, _ := h.cfg.Sessions.FromTraceparent(tp, job.GetMac()); sess != nil {
		_, hop := sess.StartHop(ctx, "callback", session.AttrJobID.String(id), attribute.String("bootchain.report_state", form.Get("state")))
		hop.SetDetail(form.Get("state") + ": " + msg)
		hop.SetAttr(diagnose.AttrReportState, form.Get("state"))
		hop.End()
		switch st {
		case bootapiv1.JobState_JOB_STATE_SUCCEEDED:
			sess.Finish(bootapiv1.SessionState_SESSION_STATE_SUCCEEDED, "", "installer reported success: "+msg)
		case bootapiv1.JobState_JOB_STATE_FAILED:
			sess.Finish(bootapiv1.SessionState_SESSION_STATE_FAILED, "callback", "installer reported failure: "+msg)
		}
	}
	h.log.Info("job report", "job", id, "mac", job.GetMac(), "state", form.Get("state"), "progress", job.GetProgress())
	rc.SetContentType(textPlain)
	rc.Response.Header.SetCanonical(cacheControl, noStore)
	rc.SetBodyString("ok " + id + " " + strings.ToLower(strings.TrimPrefix(job.GetState().String(), "JOB_STATE_")) + "\n")
	if fresh != "" {
		// The installer's token from now on; the bootstrap token is spent.
		rc.Response.AppendBodyString("token " + fresh + "\n")
	}
}

// newToken is a callback token: 256 random bits, hex.
func newToken() string {
	var raw [32]byte
	rand.Read(raw[:])
	return hex.EncodeToString(raw[:])
}

// tokenHash is what a job stores of a token.
func tokenHash(token string) [32]byte { return sha256.Sum256([]byte(token)) }

var errRefused = errors.New("report refused")

// reportForm is what net/http's Request.ParseForm made of a POST, as
// Request.Form: a url-encoded body's fields, then the query's, with the same errors
// (the first of a bad Content-Type, the body's, the query's). Its strings are
// copies, not views of fasthttp's buffers. (report refuses a token in the
// query before it gets here.)
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
