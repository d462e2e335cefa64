package grpcapi

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/artifactref"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grub"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/installer"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

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
	script.SetInstallerBase(&td, "http://bootapi.example/installer/v1/job/KEY/")
	args, err := script.Cmdline(p.GetCmdline(), td)
	if err != nil {
		return apierr.InvalidArgument("profile.cmdline", "%v", err)
	}
	// The same words go to GRUB (the Secure Boot and arm64 paths), whose
	// linux loader mangles quotes and backslashes.
	for _, a := range args {
		if err := grub.CheckKernelArg(a); err != nil {
			return apierr.InvalidArgument("profile.cmdline", "%v", err)
		}
	}
	if err := installer.CheckProfile(p); err != nil {
		return apierr.FromError(err)
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
	"installer":   func(d, s *bootapiv1.Profile) { d.Installer = s.Installer },
	// One installer file, the others kept (bootctl profiles update --preseed).
	"installer.preseed":             installerPath(func(d, s *bootapiv1.InstallerTemplates) { d.Preseed = s.GetPreseed() }),
	"installer.kickstart":           installerPath(func(d, s *bootapiv1.InstallerTemplates) { d.Kickstart = s.GetKickstart() }),
	"installer.user_data":           installerPath(func(d, s *bootapiv1.InstallerTemplates) { d.UserData = s.GetUserData() }),
	"installer.meta_data":           installerPath(func(d, s *bootapiv1.InstallerTemplates) { d.MetaData = s.GetMetaData() }),
	"installer.vendor_data":         installerPath(func(d, s *bootapiv1.InstallerTemplates) { d.VendorData = s.GetVendorData() }),
	"installer.ignition":            installerPath(func(d, s *bootapiv1.InstallerTemplates) { d.Ignition = s.GetIgnition() }),
	"installer.ssh_authorized_keys": installerPath(func(d, s *bootapiv1.InstallerTemplates) { d.SshAuthorizedKeys = s.GetSshAuthorizedKeys() }),
}

func installerPath(set func(d, s *bootapiv1.InstallerTemplates)) func(d, s *bootapiv1.Profile) {
	return func(d, s *bootapiv1.Profile) {
		if d.Installer == nil {
			d.Installer = &bootapiv1.InstallerTemplates{}
		}
		set(d.Installer, s.GetInstaller())
	}
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
