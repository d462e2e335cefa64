package grpcapi

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/installer"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
)

// What a preview's script carries where a real one has a secret or a session:
// a job's token and the boot session's traceparent (an all-zero one, which no
// parser accepts).
const (
	PreviewToken       = "PREVIEW-TOKEN"
	PreviewKey         = "PREVIEW-KEY"
	PreviewTraceparent = "00-00000000000000000000000000000000-0000000000000000-00"
)

// PreviewConfig is what a preview decides and renders with: the same values
// the script endpoint has.
type PreviewConfig struct {
	// Renderer renders as the script endpoint does.
	Renderer *script.Renderer
	// DefaultSite for machines that name none.
	DefaultSite string
	// DefaultAction when neither the machine nor its site sets one; unspecified
	// means the menu.
	DefaultAction bootapiv1.Action
}

// EnablePreview lets PreviewMachine answer; without it the method is
// Unimplemented.
func (a *API) EnablePreview(cfg PreviewConfig) *API {
	a.preview = &cfg
	return a
}

// PreviewMachine decides and renders as the script endpoint would for a request
// now, and executes nothing: it dispatches no job, records no machine and opens
// no session. Every read is of the caches but one, a pending job's profile
// missing from the cache, which is read from etcd as a dispatch would.
func (a *API) PreviewMachine(ctx context.Context, req *bootapiv1.PreviewMachineRequest) (*bootapiv1.PreviewMachineResponse, error) {
	if a.preview == nil {
		return a.UnimplementedMachineServiceServer.PreviewMachine(ctx, req)
	}
	mac, err := validate.MAC("mac", req.GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	for _, f := range []struct{ field, v string }{{"arch", req.GetArch()}, {"platform", req.GetPlatform()}} {
		if err := validate.Fact(f.field, f.v); err != nil {
			return nil, apierr.FromError(err)
		}
	}
	if p := req.GetProfile(); p != "" {
		if err := validate.Name("profile", p); err != nil {
			return nil, apierr.FromError(err)
		}
	}
	for _, name := range req.GetInstallerConfigs() {
		if _, ok := installer.FileByName(name); !ok && name != "all" {
			return nil, apierr.InvalidArgument("installer_configs", "%q: want all or one of %s", name, strings.Join(installer.Names(), ", "))
		}
	}
	if err := a.requireMAC(ctx, mac); err != nil {
		return nil, err
	}
	in, _ := a.st.DecisionInput(mac, req.GetProfile())
	in.DefaultSite, in.DefaultAction = a.preview.DefaultSite, a.preview.DefaultAction
	if in.Machine == nil {
		// An unknown machine's site is where it was seen, as the script
		// endpoint resolves it: its lease's site, else its session's.
		if site := a.st.LeaseSiteOfMAC(mac, a.now()); site != "" {
			in.DefaultSite = site
		} else if it, ok := a.sessions.Cache().Get(mac); ok && it.Value.GetSite() != "" {
			in.DefaultSite = it.Value.GetSite()
		}
	}
	// What the machine itself would get: a request from the address that holds
	// its lease (another host's request gets the default; docs/bootapi.md).
	in.Trusted = true
	d := decide.Evaluate(in)
	discover := d.Discover
	r := a.preview.Renderer
	var s script.Script
	rendered := false
	failed := "" // what a dispatch would do to a job it cannot boot
	if d.Job != nil {
		// As a dispatch: a profile not in the cache is looked for in etcd, and a
		// job that cannot be booted would be failed, the machine getting what it
		// would without the job.
		if d.Profile == nil {
			p := &bootapiv1.Profile{}
			_, err := a.store().Get(ctx, store.Key("profiles", d.Job.GetProfile()), p)
			switch {
			case err == nil:
				d.Profile = p
			case !errors.Is(err, store.ErrNotFound):
				return nil, apierr.FromError(err)
			}
		}
		if d.Profile != nil {
			s, err = r.Render(d, PreviewTraceparent, &script.Job{Token: PreviewToken, InstallerKey: PreviewKey})
			rendered = err == nil
		}
		if !rendered {
			failed = "job " + d.Job.GetId() + " would fail (profile " + d.Job.GetProfile() + " missing or not bootable); "
			in.Job = nil
			d = decide.Evaluate(in)
		}
	}
	if !rendered {
		tp := ""
		if d.Action == decide.Boot {
			tp = PreviewTraceparent
		}
		s, _ = r.Render(d, tp, nil) // a failed render is a script that says so, as the endpoint sends
	}
	out := &bootapiv1.PreviewMachineResponse{
		Rule: d.Rule, Action: d.Action.String(), Site: d.Site.GetName(), WouldDiscover: discover,
		Detail: failed + s.Detail, Script: s.Head + s.Body,
	}
	if d.Action == decide.Boot {
		out.Profile = d.Profile.GetName()
		out.JobId = d.Job.GetId()
		if k, initrds, err := r.URLs(d, PreviewTraceparent); err == nil {
			out.KernelUrl, out.InitrdUrls = k, initrds
		}
		if len(req.GetInstallerConfigs()) > 0 {
			if out.InstallerConfigs, err = previewInstaller(r, d, req.GetInstallerConfigs()); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// previewInstaller renders the installer files names (or "all" that the
// profile has) of a kernel boot, as the machine would get them, the job's
// key a placeholder. A boot that is no job's has no installer files: they are
// rendered for a job "PREVIEW-JOB" to show what a job's would be.
func previewInstaller(r *script.Renderer, d decide.Decision, names []string) (map[string]string, error) {
	id := d.Job.GetId()
	if id == "" {
		id = "PREVIEW-JOB"
	}
	cb, err := r.CallbackURL(d.Site, id)
	if err != nil {
		return nil, apierr.FailedPrecondition("installer_configs", "%v", err)
	}
	data := installer.NewData(d.Machine, d.Site, d.Profile, id, r.InstallerBase(id, PreviewKey), cb)
	if slices.Contains(names, "all") {
		names = installer.Names()
	}
	out := map[string]string{}
	for _, name := range names {
		b, _, ok, err := installer.RenderFile(name, d.Profile, data)
		switch {
		case err != nil:
			return nil, apierr.FailedPrecondition("installer_configs", "%s of profile %s cannot be rendered for this machine: %v", name, d.Profile.GetName(), err)
		case ok:
			out[name] = string(b)
		}
	}
	return out, nil
}
