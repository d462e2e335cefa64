package grpcapi

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/installer"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

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
	if err := installer.CheckKeys("machine.ssh_authorized_keys", m.GetSshAuthorizedKeys()); err != nil {
		return apierr.FromError(err)
	}
	if p := m.GetDefaultProfile(); p != "" {
		if _, ok := a.st.Profiles.Get(p); !ok {
			return apierr.InvalidArgument("machine.default_profile", "profile %q does not exist", p)
		}
	}
	return nil
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
	"site":                func(d, s *bootapiv1.Machine) { d.Site = s.Site },
	"hostname":            func(d, s *bootapiv1.Machine) { d.Hostname = s.Hostname },
	"labels":              func(d, s *bootapiv1.Machine) { d.Labels = s.Labels },
	"default_action":      func(d, s *bootapiv1.Machine) { d.DefaultAction = s.DefaultAction },
	"default_profile":     func(d, s *bootapiv1.Machine) { d.DefaultProfile = s.DefaultProfile },
	"netboot_disabled":    func(d, s *bootapiv1.Machine) { d.NetbootDisabled = s.NetbootDisabled },
	"ipv4_address":        func(d, s *bootapiv1.Machine) { d.Ipv4Address = s.Ipv4Address },
	"boot_file":           func(d, s *bootapiv1.Machine) { d.BootFile = s.BootFile },
	"ssh_authorized_keys": func(d, s *bootapiv1.Machine) { d.SshAuthorizedKeys = s.SshAuthorizedKeys },
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
