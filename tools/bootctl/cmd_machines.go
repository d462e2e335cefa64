package main

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func machineClient(g *Global) (bootapiv1.MachineServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewMachineServiceClient(cc), nil
}

// labelsFlag collects repeated -label k=v.
type labelsFlag map[string]string

func (l labelsFlag) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labelsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want key=value, got %q", s)
	}
	l[k] = v
	return nil
}

func parseAction(s string) (bootapiv1.Action, error) {
	if s == "" {
		return bootapiv1.Action_ACTION_UNSPECIFIED, nil
	}
	v, ok := bootapiv1.Action_value["ACTION_"+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]
	if !ok {
		return 0, fmt.Errorf("action %q: want menu, local-disk, sanboot, shell or profile", s)
	}
	return bootapiv1.Action(v), nil
}

func actionName(a bootapiv1.Action) string {
	if a == bootapiv1.Action_ACTION_UNSPECIFIED {
		return "(site)"
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(a.String(), "ACTION_")), "_", "-")
}

func machineFlags(fs *flag.FlagSet, m *bootapiv1.Machine, labels labelsFlag, action *string) {
	fs.StringVar(&m.Hostname, "hostname", "", "host name")
	fs.StringVar(&m.Site, "site", "", "site")
	fs.Var(labels, "label", "label key=value (repeatable)")
	fs.StringVar(action, "action", "", "default action: menu, local-disk, sanboot, shell, profile")
	fs.StringVar(&m.DefaultProfile, "profile", "", "default profile (with -action profile)")
	fs.StringVar(&m.Ipv4Address, "ip", "", "static IPv4 reservation")
	fs.StringVar(&m.BootFile, "boot-file", "", "boot file override")
	fs.BoolVar(&m.NetbootDisabled, "no-netboot", false, "give this machine no boot file")
}

// parseMachine reads "MAC [flags]" into a machine; usage is the error without a MAC.
// The flag set tells which flags were given.
func parseMachine(usage string, args []string) (*bootapiv1.Machine, *flag.FlagSet, error) {
	if len(args) < 1 {
		return nil, nil, fmt.Errorf("%s", usage)
	}
	m := &bootapiv1.Machine{Mac: args[0]}
	labels := labelsFlag{}
	var action string
	fs := flag.NewFlagSet(strings.Fields(usage)[0]+" "+strings.Fields(usage)[1], flag.ContinueOnError)
	machineFlags(fs, m, labels, &action)
	if err := fs.Parse(args[1:]); err != nil {
		return nil, nil, err
	}
	a, err := parseAction(action)
	if err != nil {
		return nil, nil, err
	}
	m.DefaultAction, m.Labels = a, labels
	return m, fs, nil
}

func runMachines(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "machines", args, map[string]func(context.Context, *Global, []string) error{
		"list": func(ctx context.Context, g *Global, args []string) error {
			fs := flag.NewFlagSet("machines list", flag.ContinueOnError)
			sel := fs.String("l", "", "label selector (k=v,k2)")
			site := fs.String("site", "", "only this site")
			if err := fs.Parse(args); err != nil {
				return err
			}
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.ListMachines(ctx, &bootapiv1.ListMachinesRequest{LabelSelector: *sel, Site: *site})
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, r)
			}
			var rows [][]string
			for _, m := range r.GetMachines() {
				kind := "registered"
				if m.GetDiscovered() {
					kind = "discovered"
				}
				rows = append(rows, []string{m.GetMac(), dash(m.GetHostname()), dash(m.GetSite()), actionName(m.GetDefaultAction()), kind, labelString(m.GetLabels()), ago(m.GetLastSeenTime())})
			}
			return printTable(g, []string{"MAC", "HOSTNAME", "SITE", "DEFAULT", "KIND", "LABELS", "LAST SEEN"}, rows)
		},
		"get": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("machines get MAC")
			}
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: args[0]})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetMachine())
		},
		"register": func(ctx context.Context, g *Global, args []string) error {
			m, _, err := parseMachine("machines register MAC [-hostname H] [-label k=v] [-action A] [-profile P]", args)
			if err != nil {
				return err
			}
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: m})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetMachine())
		},
		"update": func(ctx context.Context, g *Global, args []string) error {
			m, fs, err := parseMachine("machines update MAC [flags]: only the flags given change", args)
			if err != nil {
				return err
			}
			names := map[string]string{"hostname": "hostname", "site": "site", "label": "labels", "action": "default_action", "profile": "default_profile", "ip": "ipv4_address", "boot-file": "boot_file", "no-netboot": "netboot_disabled"}
			mask := &fieldmaskpb.FieldMask{}
			fs.Visit(func(f *flag.Flag) { mask.Paths = append(mask.Paths, names[f.Name]) })
			if len(mask.Paths) == 0 {
				return fmt.Errorf("machines update: nothing to change")
			}
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{Machine: m, UpdateMask: mask})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetMachine())
		},
		"delete": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("machines delete MAC")
			}
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			if _, err := c.DeleteMachine(ctx, &bootapiv1.DeleteMachineRequest{Mac: args[0]}); err != nil {
				return err
			}
			fmt.Fprintln(g.Out, "deleted", args[0])
			return nil
		},
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func labelString(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
