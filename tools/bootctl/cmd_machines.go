package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func machineClient(g *Global) (bootapiv1.MachineServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewMachineServiceClient(cc), nil
}

func machinesCommand(g *Global) *cobra.Command {
	return group(&cobra.Command{
		Use:     "machines",
		Aliases: []string{"machine"},
		Short:   "List, show, register, update and delete machines",
		Long: `A machine is a MAC address bootchain knows: registered by an operator, or
discovered when it first asked for a boot. Its default action (menu, local-disk,
sanboot, shell or profile) says what it boots when no job is pending.`,
	},
		machinesListCommand(g),
		machinesGetCommand(g),
		machinesRegisterCommand(g),
		machinesUpdateCommand(g),
		machinesDeleteCommand(g),
		machinesPreviewCommand(g),
	)
}

func machinesListCommand(g *Global) *cobra.Command {
	var selector, site string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List machines",
		Example: `  bootctl machines list
  bootctl machines list -l rack=r12,role
  bootctl machines list --site lab -o json`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.ListMachines(ctx, &bootapiv1.ListMachinesRequest{LabelSelector: selector, Site: site})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error { return machineTable(w, r.GetMachines()) })
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector: k=v, k!=v, k (comma-separated, all must match)")
	cmd.Flags().StringVar(&site, "site", "", "only machines of this site")
	_ = cmd.RegisterFlagCompletionFunc("site", complete(g, siteNames))
	return withFields(cmd, map[string]string{"label_selector": "--selector", "site": "--site"})
}

func machineKind(m *bootapiv1.Machine) string {
	if m.GetDiscovered() {
		return "discovered"
	}
	return "registered"
}

func machineTable(w io.Writer, ms []*bootapiv1.Machine) error {
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		rows = append(rows, []string{m.GetMac(), dash(m.GetHostname()), dash(m.GetSite()), actionName(m.GetDefaultAction(), m.GetDefaultProfile()), machineKind(m), labelString(m.GetLabels()), ago(m.GetLastSeenTime())})
	}
	return writeTable(w, []string{"MAC", "HOSTNAME", "SITE", "DEFAULT", "KIND", "LABELS", "LAST SEEN"}, rows)
}

func machineDetail(w io.Writer, m *bootapiv1.Machine) error {
	return writeDetail(w, []field{
		{"MAC", m.GetMac()},
		{"Hostname", dash(m.GetHostname())},
		{"Site", dash(m.GetSite())},
		{"Kind", machineKind(m)},
		{"Default", actionName(m.GetDefaultAction(), m.GetDefaultProfile())},
		{"IPv4 address", dash(m.GetIpv4Address())},
		{"Boot file", dash(m.GetBootFile())},
		{"Netboot", yesNo(!m.GetNetbootDisabled())},
		{"Labels", labelString(m.GetLabels())},
		{"SSH keys", strconv.Itoa(len(m.GetSshAuthorizedKeys()))},
		{"Created", ts(m.GetCreateTime())},
		{"Updated", ts(m.GetUpdateTime())},
		{"Last seen", ts(m.GetLastSeenTime())},
	})
}

func showMachine(g *Global, m *bootapiv1.Machine) error {
	return g.show(m, func(w io.Writer) error { return machineDetail(w, m) })
}

// actionName is the CLI word of a default action; "(site)" when the machine
// follows its site, and "profile NAME" for a profile.
func actionName(a bootapiv1.Action, profile string) string {
	switch a {
	case bootapiv1.Action_ACTION_UNSPECIFIED:
		return "(site)"
	case bootapiv1.Action_ACTION_PROFILE:
		if profile != "" {
			return "profile " + profile
		}
	}
	return enumName(a.String(), "ACTION_")
}

func parseAction(flag, s string) (bootapiv1.Action, error) {
	v, err := parseEnum(flag, s, "ACTION_", bootapiv1.Action_value)
	return bootapiv1.Action(v), err
}

var actionWords = enumWords("ACTION_", bootapiv1.Action_value)

// machineFlags are the flags of register and update, and the machine fields
// they set.
type machineFlags struct {
	m      bootapiv1.Machine
	labels []string
	action string
}

// machineFields maps the flags to the fields of Machine, for update masks and
// for errors that name a field.
var machineFields = map[string]string{
	"hostname": "hostname", "site": "site", "label": "labels", "action": "default_action",
	"profile": "default_profile", "ip": "ipv4_address", "boot-file": "boot_file", "no-netboot": "netboot_disabled",
	"ssh-key": "ssh_authorized_keys",
}

func (f *machineFlags) bind(g *Global, cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.m.Hostname, "hostname", "", "host name")
	fs.StringVar(&f.m.Site, "site", "", "site the machine belongs to")
	fs.StringArrayVar(&f.labels, "label", nil, "label key=value (repeatable)")
	fs.StringVar(&f.action, "action", "", "default action: "+strings.Join(actionWords, ", ")+" (empty: the site's)")
	fs.StringVar(&f.m.DefaultProfile, "profile", "", "default profile, with --action profile")
	fs.StringVar(&f.m.Ipv4Address, "ip", "", "static IPv4 reservation")
	fs.StringVar(&f.m.BootFile, "boot-file", "", "boot file instead of the site's")
	fs.BoolVar(&f.m.NetbootDisabled, "no-netboot", false, "offer this machine no boot file")
	fs.StringArrayVar(&f.m.SshAuthorizedKeys, "ssh-key", nil, "SSH public key of the installed system, with its profile's (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("site", complete(g, siteNames))
	_ = cmd.RegisterFlagCompletionFunc("profile", complete(g, profileNames))
	_ = cmd.RegisterFlagCompletionFunc("action", words(actionWords...))
	fields := map[string]string{"mac": "MAC", "machine.mac": "MAC", "machine": "MAC"}
	for flag, f := range machineFields {
		fields["machine."+f] = "--" + flag
	}
	withFields(cmd, fields)
}

// machine returns the machine the flags describe.
func (f *machineFlags) machine(mac string) (*bootapiv1.Machine, error) {
	m := &f.m
	m.Mac = mac
	labels, err := parseLabels(f.labels)
	if err != nil {
		return nil, err
	}
	m.Labels = labels
	if f.action != "" {
		if m.DefaultAction, err = parseAction("action", f.action); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// parseLabels reads repeated key=value flags.
func parseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("--label %q: want key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}

func machinesGetCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "get MAC",
		Aliases:           []string{"show"},
		Short:             "Show one machine",
		Example:           `  bootctl machines get 52:54:00:12:34:56`,
		Args:              argNames("MAC"),
		ValidArgsFunction: firstArg(g, machineMACs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: args[0]})
			if err != nil {
				return err
			}
			return showMachine(g, r.GetMachine())
		},
	}
	return withFields(cmd, map[string]string{"mac": "MAC"})
}

func machinesRegisterCommand(g *Global) *cobra.Command {
	var f machineFlags
	cmd := &cobra.Command{
		Use:     "register MAC",
		Aliases: []string{"create"},
		Short:   "Register a machine (or claim a discovered one)",
		Example: `  bootctl machines register 52:54:00:12:34:56 --hostname node1 --label rack=r12
  bootctl machines register 52:54:00:12:34:57 --action profile --profile debian-12`,
		Args: argNames("MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := f.machine(args[0])
			if err != nil {
				return err
			}
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: m})
			if err != nil {
				return err
			}
			return showMachine(g, r.GetMachine())
		},
	}
	f.bind(g, cmd)
	return cmd
}

func machinesUpdateCommand(g *Global) *cobra.Command {
	var f machineFlags
	cmd := &cobra.Command{
		Use:   "update MAC",
		Short: "Change a machine: only the flags given change",
		Example: `  bootctl machines update 52:54:00:12:34:56 --action local-disk
  bootctl machines update 52:54:00:12:34:56 --label rack=r13 --hostname node1b`,
		Args:              argNames("MAC"),
		ValidArgsFunction: firstArg(g, machineMACs),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := f.machine(args[0])
			if err != nil {
				return err
			}
			mask := changedFields(cmd.Flags(), machineFields)
			if len(mask.GetPaths()) == 0 {
				return usageErrorf("%s: nothing to change: give at least one flag", cmd.CommandPath())
			}
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{Machine: m, UpdateMask: mask})
			if err != nil {
				return err
			}
			return showMachine(g, r.GetMachine())
		},
	}
	f.bind(g, cmd)
	return cmd
}

// changedFields is the update mask of the flags given: fields maps a flag to
// its field.
func changedFields(fs *pflag.FlagSet, fields map[string]string) *fieldmaskpb.FieldMask {
	mask := &fieldmaskpb.FieldMask{}
	fs.Visit(func(f *pflag.Flag) {
		if p, ok := fields[f.Name]; ok {
			mask.Paths = append(mask.Paths, p)
		}
	})
	return mask
}

func machinesDeleteCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete MAC",
		Aliases:           []string{"rm"},
		Short:             "Delete a machine",
		Example:           `  bootctl machines delete 52:54:00:12:34:56`,
		Args:              argNames("MAC"),
		ValidArgsFunction: firstArg(g, machineMACs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.DeleteMachine(ctx, &bootapiv1.DeleteMachineRequest{Mac: args[0]})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted machine %s\n", args[0])
				return err
			})
		},
	}
	return withFields(cmd, map[string]string{"mac": "MAC"})
}

func machinesPreviewCommand(g *Global) *cobra.Command {
	req := &bootapiv1.PreviewMachineRequest{}
	cmd := &cobra.Command{
		Use:   "preview MAC",
		Short: "Show what a machine would boot if it asked now, changing nothing",
		Long: `Preview asks bootapi what the machine would get if it asked for its boot script
now: the rule of the decision chain that decides, the action, the profile, the
pending job that would be dispatched, the kernel and initrd URLs, and the iPXE
script itself. Nothing changes: no job is dispatched, no boot session opened, an
unknown machine is not recorded. In the script a job's token and the session's
traceparent are placeholders.

With --config, it prints instead the installer files the boot's profile would
serve the machine (preseed, kickstart, user-data, meta-data, vendor-data,
ignition, or all), rendered as bootapi serves them; the job's key in their
URLs is a placeholder.`,
		Example: `  bootctl machines preview 52:54:00:12:34:56
  bootctl machines preview 52:54:00:12:34:56 --arch arm64 --platform efi
  bootctl machines preview 52:54:00:12:34:56 --profile rescue -o yaml
  bootctl machines preview 52:54:00:12:34:56 --config preseed > preseed.cfg
  bootctl machines preview 52:54:00:12:34:56 --profile debian-12 --config all`,
		Args:              argNames("MAC"),
		ValidArgsFunction: firstArg(g, machineMACs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := machineClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			req.Mac = args[0]
			r, err := c.PreviewMachine(ctx, req)
			if err != nil {
				return err
			}
			if len(req.GetInstallerConfigs()) > 0 {
				return g.show(r, func(w io.Writer) error { return previewConfigs(w, r, req.GetInstallerConfigs()) })
			}
			return g.show(r, func(w io.Writer) error { return previewDetail(w, r) })
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVar(&req.InstallerConfigs, "config", nil, "print this installer file instead: "+strings.Join(installerFileNames, ", ")+" or all (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("config", words(append(installerFileNames, "all")...))
	fs.StringVar(&req.Arch, "arch", "", "architecture iPXE would report (x86_64, arm64); checked, but no rule depends on it today")
	fs.StringVar(&req.Platform, "platform", "", "platform iPXE would report (pcbios, efi); checked, but no rule depends on it today")
	fs.StringVar(&req.Profile, "profile", "", "profile picked in the boot menu")
	_ = cmd.RegisterFlagCompletionFunc("profile", complete(g, profileNames))
	_ = cmd.RegisterFlagCompletionFunc("arch", words("x86_64", "i386", "arm64"))
	_ = cmd.RegisterFlagCompletionFunc("platform", words("pcbios", "efi"))
	return withFields(cmd, map[string]string{"mac": "MAC", "arch": "--arch", "platform": "--platform", "profile": "--profile", "installer_configs": "--config"})
}

// installerFileNames are the installer files bootapi serves, in its order.
var installerFileNames = []string{"preseed", "kickstart", "user-data", "meta-data", "vendor-data", "ignition"}

// previewConfigs prints the installer files: one as it is (to redirect to a
// file), several each under a header line.
func previewConfigs(w io.Writer, r *bootapiv1.PreviewMachineResponse, asked []string) error {
	if r.GetAction() != "boot" {
		return fmt.Errorf("the machine would not boot a kernel (%s by rule %s): no installer files", r.GetAction(), r.GetRule())
	}
	var names []string
	for _, n := range installerFileNames {
		if _, ok := r.GetInstallerConfigs()[n]; ok {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("profile %s has none of %s", r.GetProfile(), strings.Join(asked, ", "))
	}
	if len(names) == 1 && len(asked) == 1 && asked[0] != "all" {
		_, err := io.WriteString(w, r.GetInstallerConfigs()[names[0]])
		return err
	}
	for i, n := range names {
		sep := ""
		if i > 0 {
			sep = "\n"
		}
		if _, err := fmt.Fprintf(w, "%s==> %s <==\n%s", sep, n, r.GetInstallerConfigs()[n]); err != nil {
			return err
		}
	}
	return nil
}

func previewDetail(w io.Writer, r *bootapiv1.PreviewMachineResponse) error {
	fields := []field{
		{"Rule", r.GetRule()},
		{"Action", r.GetAction()},
		{"Profile", dash(r.GetProfile())},
		{"Job", dash(r.GetJobId())},
		{"Site", dash(r.GetSite())},
		{"Discovers", yesNo(r.GetWouldDiscover())},
		{"Detail", dash(r.GetDetail())},
		{"Kernel", dash(r.GetKernelUrl())},
	}
	for i, u := range r.GetInitrdUrls() {
		fields = append(fields, field{fmt.Sprintf("Initrd %d", i), u})
	}
	if len(r.GetInitrdUrls()) == 0 {
		fields = append(fields, field{"Initrds", "-"})
	}
	if err := writeDetail(w, fields); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nScript:\n%s", r.GetScript())
	return err
}
