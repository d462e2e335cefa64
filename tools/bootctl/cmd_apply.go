package main

import (
	"context"

	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/tools/bootctl/internal/fleet"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// The writable fields of profiles and machines: apply sets all of them, so
// that a field the file leaves out is cleared, as PutSite does for sites.
var (
	profileMask = []string{"description", "kernel", "initrds", "cmdline", "labels", "menu"}
	machineMask = []string{"hostname", "site", "labels", "default_action", "default_profile", "ipv4_address", "boot_file", "netboot_disabled"}
)

func applyCommand(g *Global) *cobra.Command {
	var file string
	var dryRun, prune bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make sites, profiles and machines what a fleet file declares",
		Long: `apply reads a fleet file (the format "bootctl export" writes: YAML or JSON
with lists "profiles", "sites" and "machines" in the protos' JSON field names;
several "---" documents add up) and makes bootapi hold exactly that. It prints
what it changes, field by field, and then changes it: profiles first, then
sites, then machines. Objects equal to the file are left alone, so a second
apply changes nothing.

Every field of a declared object is set: a field the file leaves out is
cleared. Objects the file does not name are kept, unless --prune is given:
then those of the kinds the file has a list for are deleted (machines, then
sites, then profiles). Discovered machines are never pruned.

Before writing anything apply checks that the artifacts the profiles name
exist in artifactstore, and names those that do not.`,
		Example: `  bootctl export > fleet.yaml
  bootctl apply -f fleet.yaml --dry-run
  bootctl apply -f fleet.yaml --prune`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageErrorf("%s: --file is required", cmd.CommandPath())
			}
			var b []byte
			var err error
			if file == "-" {
				b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), fleet.MaxSize+1))
			} else {
				b, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			want, err := fleet.Parse(b)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			cur, err := fetchFleet(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			plan := fleet.Diff(want, cur, prune)
			fmt.Fprint(g.Out, plan.Render())
			if err := checkArtifacts(cmd.Context(), g, plan); err != nil {
				return err
			}
			if dryRun || len(plan.Ops) == 0 {
				return nil
			}
			for i, op := range plan.Ops {
				if err := applyOp(cmd.Context(), g, op); err != nil {
					err.done = i
					return err
				}
			}
			fmt.Fprintf(g.Out, "applied %d change(s)\n", len(plan.Ops))
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&file, "file", "f", "", "fleet file (YAML or JSON; - reads standard input)")
	fs.BoolVar(&dryRun, "dry-run", false, "show what would change and change nothing")
	fs.BoolVar(&prune, "prune", false, "delete objects of the listed kinds the file does not name")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml", "json")
	return cmd
}

// fetchFleet lists what bootapi holds. Without all, discovered machines are
// left out (export); apply needs them to tell they exist and are not pruned.
func fetchFleet(ctx context.Context, g *Global, all bool) (*fleet.Current, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	cur := &fleet.Current{}
	ctx, cancel := g.call(ctx)
	defer cancel()
	ps, err := bootapiv1.NewProfileServiceClient(cc).ListProfiles(ctx, &bootapiv1.ListProfilesRequest{})
	if err != nil {
		return nil, err
	}
	ss, err := bootapiv1.NewSiteServiceClient(cc).ListSites(ctx, &bootapiv1.ListSitesRequest{})
	if err != nil {
		return nil, err
	}
	ms, err := bootapiv1.NewMachineServiceClient(cc).ListMachines(ctx, &bootapiv1.ListMachinesRequest{})
	if err != nil {
		return nil, err
	}
	cur.Profiles, cur.Sites = ps.GetProfiles(), ss.GetSites()
	for _, m := range ms.GetMachines() {
		if all || !m.GetDiscovered() {
			cur.Machines = append(cur.Machines, m)
		}
	}
	return cur, nil
}

// checkArtifacts fails, naming every one, when a profile to be written names
// an artifact artifactstore does not have: bootapi would accept the profile
// and machines would fail to boot it.
func checkArtifacts(ctx context.Context, g *Global, plan *fleet.Plan) error {
	users := map[string][]string{} // artifact -> "profile X kernel"
	for _, op := range plan.Ops {
		p, ok := op.Want.(*bootapiv1.Profile)
		if !ok {
			continue
		}
		if a := p.GetKernel().GetArtifact(); a != "" {
			users[a] = append(users[a], "profile "+p.GetName()+" kernel")
		}
		for i, r := range p.GetInitrds() {
			if a := r.GetArtifact(); a != "" {
				users[a] = append(users[a], fmt.Sprintf("profile %s initrds[%d]", p.GetName(), i))
			}
		}
	}
	if len(users) == 0 {
		return nil
	}
	cc, err := g.Conn("artifactstore")
	if err != nil {
		return err
	}
	c := artifactv1.NewArtifactServiceClient(cc)
	var missing []string
	for a, who := range users {
		cctx, cancel := g.call(ctx)
		_, err := c.Stat(cctx, &artifactv1.StatRequest{Name: a})
		cancel()
		if status.Code(err) == codes.NotFound {
			missing = append(missing, fmt.Sprintf("%s (%s)", a, strings.Join(who, ", ")))
			continue
		}
		if err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("nothing applied: artifacts missing from artifactstore (upload them with bootctl artifacts upload): %s", strings.Join(missing, "; "))
	}
	return nil
}

// applyOp runs one operation; its error names the object and, when bootapi
// says which, the field.
func applyOp(ctx context.Context, g *Global, op fleet.Op) *applyError {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return &applyError{op: op, err: err}
	}
	ctx, cancel := g.call(ctx)
	defer cancel()
	switch op.Kind + " " + op.Action {
	case "profile create":
		_, err = bootapiv1.NewProfileServiceClient(cc).CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: op.Want.(*bootapiv1.Profile)})
	case "profile update":
		_, err = bootapiv1.NewProfileServiceClient(cc).UpdateProfile(ctx, &bootapiv1.UpdateProfileRequest{Profile: op.Want.(*bootapiv1.Profile), UpdateMask: &fieldmaskpb.FieldMask{Paths: profileMask}})
	case "profile delete":
		_, err = bootapiv1.NewProfileServiceClient(cc).DeleteProfile(ctx, &bootapiv1.DeleteProfileRequest{Name: op.Name})
	case "site create", "site update":
		_, err = bootapiv1.NewSiteServiceClient(cc).PutSite(ctx, &bootapiv1.PutSiteRequest{Site: op.Want.(*bootapiv1.Site)})
	case "site delete":
		_, err = bootapiv1.NewSiteServiceClient(cc).DeleteSite(ctx, &bootapiv1.DeleteSiteRequest{Name: op.Name})
	case "machine create":
		_, err = bootapiv1.NewMachineServiceClient(cc).RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: op.Want.(*bootapiv1.Machine)})
	case "machine update":
		_, err = bootapiv1.NewMachineServiceClient(cc).UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{Machine: op.Want.(*bootapiv1.Machine), UpdateMask: &fieldmaskpb.FieldMask{Paths: machineMask}})
	case "machine delete":
		_, err = bootapiv1.NewMachineServiceClient(cc).DeleteMachine(ctx, &bootapiv1.DeleteMachineRequest{Mac: op.Name})
	default:
		err = fmt.Errorf("internal: no way to %s a %s", op.Action, op.Kind)
	}
	if err == nil && op.Action == "delete" {
		err = waitGone(ctx, cc, op)
	}
	if err == nil {
		return nil
	}
	return &applyError{op: op, err: err}
}

// waitGone waits until bootapi no longer serves a deleted object: its deletes
// answer before its cache forgets the object, and the cache is what the next
// delete checks (a site "still has machines" just deleted) and what the next
// command reads.
func waitGone(ctx context.Context, cc grpc.ClientConnInterface, op fleet.Op) error {
	for {
		var err error
		switch op.Kind {
		case fleet.KindMachine:
			_, err = bootapiv1.NewMachineServiceClient(cc).GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: op.Name})
		case fleet.KindSite:
			_, err = bootapiv1.NewSiteServiceClient(cc).GetSite(ctx, &bootapiv1.GetSiteRequest{Name: op.Name})
		default:
			_, err = bootapiv1.NewProfileServiceClient(cc).GetProfile(ctx, &bootapiv1.GetProfileRequest{Name: op.Name})
		}
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deleted, but bootapi still serves it: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// applyError says which object failed. It is not a gRPC status, so that
// explain prints it whole rather than map the field to a flag of apply.
type applyError struct {
	op   fleet.Op
	err  error
	done int // operations applied before this one
}

func (e *applyError) Error() string {
	msg := e.err.Error()
	if st, ok := status.FromError(e.err); ok {
		msg = st.Code().String() + ": " + st.Message()
		if field, desc := violation(st); field != "" {
			msg = "field " + field + ": " + desc
		}
	}
	applied := "nothing applied"
	if e.done > 0 {
		applied = fmt.Sprintf("the %d change(s) listed before it were applied", e.done)
	}
	return fmt.Sprintf("%s %s %s: %s (%s)", e.op.Action, e.op.Kind, e.op.Name, msg, applied)
}
