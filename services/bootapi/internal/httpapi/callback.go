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
	if h.offline() {
		// Nothing can be recorded: the installer retries (test/e2e's
		// initramfs does for minutes), and its report lands once etcd is back.
		unavailable(rc, "etcd unreachable: report not recorded, retry")
		return
	}
	ip := remoteIP(rc)
	now := h.cfg.Now()
	var code int
	var why, fresh string
	job, rev, err := h.cfg.State.Update(ctx, id, func(j *bootapiv1.Job) error {
		sum := tokenHash(token)
		current := len(j.GetTokenHash()) > 0 && subtle.ConstantTimeCompare(sum[:], j.GetTokenHash()) == 1
		again := !current && exchangeLost(j, sum, now)
		if !current && !again {
			code, why = fasthttp.StatusForbidden, "token does not match this job"
			return errRefused
		}
		if !h.cfg.State.ReportFrom(j, ip, now) {
			code, why = fasthttp.StatusForbidden, "report from "+ip+": not the address the job was dispatched to, nor one holding its machine's lease"
			return errRefused
		}
		switch j.GetState() {
		case bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING:
		case st:
			if current {
				// The same final report again: the answer to the one recorded
				// was lost. Nothing changes; the installer hears ok.
				return errAlready
			}
			fallthrough
		default:
			code, why = fasthttp.StatusConflict, "job is "+strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_"))+": reports are closed"
			return errRefused
		}
		switch {
		case !j.GetTokenExchanged() || again:
			// Update may call this again after a conflict: each attempt draws its
			// own token, and the answer carries the one that was written.
			fresh = newToken()
			fh := tokenHash(fresh)
			j.BootstrapTokenHash = sum[:]
			j.TokenHash, j.TokenExchanged = fh[:], true
		default:
			// The fresh token is in use: the bootstrap token is spent for good.
			fresh, j.BootstrapTokenHash = "", nil
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
	if errors.Is(err, errAlready) {
		h.auditCallback(ctx, rc, id, known.GetMac(), form.Get("state")+" (repeated)", code, nil, rev)
	} else {
		h.auditCallback(ctx, rc, id, known.GetMac(), form.Get("state"), code, err, rev)
	}
	switch {
	case errors.Is(err, errAlready):
		h.log.Info("job report repeated", "job", id, "state", form.Get("state"))
		rc.SetContentType(textPlain)
		rc.Response.Header.SetCanonical(cacheControl, noStore)
		rc.SetBodyString("ok " + id + " " + form.Get("state") + "\n")
		return
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
		unavailable(rc, "report not recorded, retry")
		return
	}
	h.Reports.Add(1)
	h.admission.release(id)
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
		_, hop := sess.StartHop(ctx, "callback", session.AttrJobID.String(id), attribute.String("bootchain.report_state", form.Get("state")), attribute.String("client.address", remoteIP(rc)))
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

// ExchangeGrace is how long after the token exchange the bootstrap token is
// taken again, as long as no report has used the fresh token: the answer that
// carried the fresh token may have been lost (the installer timed out, or got
// a 503 after the write committed), and without it the installer could never
// report again. In a 1,000-machine storm on a loaded machine 66 installers
// were locked out so. An installer retries within about 30 s (bootchain.sh:
// 3 tries of 10 s); the window closes at the first report with the fresh
// token, or after this.
const ExchangeGrace = time.Minute

// exchangeLost reports whether sum is the hash of the job's bootstrap token
// presented again within ExchangeGrace of its exchange (the last report).
func exchangeLost(j *bootapiv1.Job, sum [32]byte, now time.Time) bool {
	if !j.GetTokenExchanged() || len(j.GetBootstrapTokenHash()) == 0 || len(j.GetReports()) == 0 {
		return false
	}
	if now.Sub(j.GetReports()[len(j.GetReports())-1].GetTime().AsTime()) > ExchangeGrace {
		return false
	}
	return subtle.ConstantTimeCompare(sum[:], j.GetBootstrapTokenHash()) == 1
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

// errAlready is a final report the job has already recorded.
var errAlready = errors.New("report already recorded")

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
