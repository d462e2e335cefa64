package httpapi

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strconv"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/installer"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
)

// installerPrefix is where a job's installer files are served:
// /installer/v1/<job>/<key>/<file>.
const installerPrefix = "/installer/v1/"

// installerFile serves one of a job's installer files (a preseed, a
// kickstart, the NoCloud seed's meta-data, user-data and vendor-data, an
// Ignition config), rendered for the job's machine. Only to that machine,
// under the trust of the job's reports: the key of the URL (drawn at dispatch,
// only its hash stored) and a request from the address the job was dispatched
// to or one holding the machine's lease, while the job is dispatched or
// running. A refused request changes nothing and records no hop.
func (h *Handler) installerFile(ctx context.Context, rc *fasthttp.RequestCtx) {
	parts := strings.Split(strings.TrimPrefix(string(rc.Path()), installerPrefix), "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		h.Rejected.Add(1)
		httpError(rc, "want /installer/v1/<job>/<key>/<file>", fasthttp.StatusNotFound)
		return
	}
	id, key, name := parts[0], parts[1], parts[2]
	if _, ok := installer.FileByName(name); !ok {
		h.Rejected.Add(1)
		httpError(rc, "file: want one of "+strings.Join(installer.Names(), ", "), fasthttp.StatusNotFound)
		return
	}
	jit, ok := h.cfg.State.Jobs.Get(id)
	if !ok {
		h.Rejected.Add(1)
		httpError(rc, "job: no such job", fasthttp.StatusNotFound)
		return
	}
	j, ip := jit.Value, remoteIP(rc)
	sum := tokenHash(key)
	switch {
	case len(j.GetInstallerKeyHash()) == 0 || subtle.ConstantTimeCompare(sum[:], j.GetInstallerKeyHash()) != 1:
		h.refuseInstaller(rc, id, ip, "key does not match this job", fasthttp.StatusForbidden)
		return
	case !h.cfg.State.ReportFrom(j, ip, h.cfg.Now()):
		h.refuseInstaller(rc, id, ip, "request from "+ip+": not the address the job was dispatched to, nor one holding its machine's lease", fasthttp.StatusForbidden)
		return
	}
	switch j.GetState() {
	case bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING:
	default:
		h.refuseInstaller(rc, id, ip, "job is "+strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_"))+": its installer files are closed", fasthttp.StatusConflict)
		return
	}
	in, _ := h.cfg.State.DecisionInput(j.GetMac(), "")
	in.DefaultSite = h.cfg.DefaultSite
	p, ok := in.Profiles(j.GetProfile())
	if in.Machine == nil || !ok {
		httpError(rc, "the job's machine or profile no longer exists", fasthttp.StatusNotFound)
		return
	}
	site := decide.SiteOf(in)
	cb, err := h.renderer(rc).CallbackURL(site, id)
	if err != nil {
		h.log.Error("installer file not rendered", "job", id, "file", name, "err", err)
		httpError(rc, "installer file cannot be rendered", fasthttp.StatusInternalServerError)
		return
	}
	data := installer.NewData(in.Machine, site, p, id, h.renderer(rc).InstallerBase(id, key), cb)
	out, f, ok, err := installer.RenderFile(name, p, data)
	if !ok {
		httpError(rc, "profile "+p.GetName()+" has no "+name, fasthttp.StatusNotFound)
		return
	}
	if rc.IsGet() {
		// The hop of the job's boot session: which file its installer read.
		if sess, _ := h.cfg.Sessions.FromTraceparent(j.GetTraceparent(), j.GetMac()); sess != nil {
			_, hop := sess.StartHop(ctx, "installer", session.AttrJobID.String(id), attribute.String("bootchain.installer_file", name))
			if err != nil {
				hop.Fail(fmt.Errorf("%s: %w", name, err))
			} else {
				hop.SetBytes(int64(len(out)))
				hop.SetDetail(name + " (" + strconv.Itoa(len(out)) + " bytes)")
			}
			hop.End()
		}
	}
	if err != nil {
		// A record written around the API (a hostname with a line break): no
		// file rather than one whose structure a value changed.
		h.log.Error("installer file not rendered", "job", id, "mac", j.GetMac(), "file", name, "err", err)
		httpError(rc, name+" cannot be rendered for this machine: "+err.Error(), fasthttp.StatusInternalServerError)
		return
	}
	h.log.Info("installer file", "job", id, "mac", j.GetMac(), "file", name, "bytes", len(out))
	rc.SetContentType(f.ContentType)
	rc.Response.Header.SetCanonical(cacheControl, noStore)
	rc.SetBody(out)
}

func (h *Handler) refuseInstaller(rc *fasthttp.RequestCtx, id, ip, why string, code int) {
	h.Rejected.Add(1)
	h.log.Warn("installer file refused", "job", id, "client", ip, "why", why)
	httpError(rc, why, code)
}

// loggedPath is a request path as a log may show it: an installer file's
// key, a secret, masked.
func loggedPath(path []byte) string {
	rest, ok := strings.CutPrefix(string(path), installerPrefix)
	if !ok {
		return string(path)
	}
	id, rest, _ := strings.Cut(rest, "/")
	_, file, _ := strings.Cut(rest, "/")
	return installerPrefix + id + "/KEY/" + file
}
