package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
)

func profileClient(g *Global) (bootapiv1.ProfileServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewProfileServiceClient(cc), nil
}

func profilesCommand(g *Global) *cobra.Command {
	return group(&cobra.Command{
		Use:     "profiles",
		Aliases: []string{"profile"},
		Short:   "List, show, create, update and delete boot profiles",
		Long: `A profile is what a machine boots: a kernel, initrds and a kernel command line.
Kernel and initrds name artifacts (uploaded with "bootctl artifacts upload") or
http(s) URLs. The command line is a template; "bootctl profiles fields" lists
what it may use.`,
	},
		profilesListCommand(g),
		profilesGetCommand(g),
		profilesCreateCommand(g),
		profilesUpdateCommand(g),
		profilesDeleteCommand(g),
		profilesFieldsCommand(g),
	)
}

// ref reads "http(s)://..." as a URL and anything else as an artifact name.
func ref(s string) *bootapiv1.ArtifactRef {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Url{Url: s}}
	}
	return &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: s}}
}

func refString(r *bootapiv1.ArtifactRef) string {
	if u := r.GetUrl(); u != "" {
		return u
	}
	return r.GetArtifact()
}

func initrdString(p *bootapiv1.Profile) string {
	var initrds []string
	for _, i := range p.GetInitrds() {
		initrds = append(initrds, refString(i))
	}
	return dash(strings.Join(initrds, ","))
}

func profilesListCommand(g *Global) *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List profiles",
		Example: `  bootctl profiles list
  bootctl profiles list -l os=debian`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.ListProfiles(ctx, &bootapiv1.ListProfilesRequest{LabelSelector: selector})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error { return profileTable(w, r.GetProfiles()) })
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector: k=v, k!=v, k (comma-separated, all must match)")
	return withFields(cmd, map[string]string{"label_selector": "--selector"})
}

func profileTable(w io.Writer, ps []*bootapiv1.Profile) error {
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		rows = append(rows, []string{p.GetName(), dash(refString(p.GetKernel())), initrdString(p), yesNo(p.GetMenu()), labelString(p.GetLabels()), dash(p.GetDescription())})
	}
	return writeTable(w, []string{"NAME", "KERNEL", "INITRDS", "MENU", "LABELS", "DESCRIPTION"}, rows)
}

func showProfile(g *Global, p *bootapiv1.Profile) error {
	return g.show(p, func(w io.Writer) error {
		return writeDetail(w, []field{
			{"Name", p.GetName()},
			{"Description", dash(p.GetDescription())},
			{"Kernel", dash(refString(p.GetKernel()))},
			{"Initrds", initrdString(p)},
			{"Cmdline", dash(p.GetCmdline())},
			{"Installer", installerString(p.GetInstaller())},
			{"SSH keys", strconv.Itoa(len(p.GetInstaller().GetSshAuthorizedKeys()))},
			{"Menu", yesNo(p.GetMenu())},
			{"Labels", labelString(p.GetLabels())},
			{"Created", ts(p.GetCreateTime())},
			{"Updated", ts(p.GetUpdateTime())},
		})
	})
}

// installerString names the installer files a profile has, with their sizes.
func installerString(it *bootapiv1.InstallerTemplates) string {
	var out []string
	for _, f := range []struct {
		name, tmpl string
	}{{"preseed", it.GetPreseed()}, {"kickstart", it.GetKickstart()}, {"user-data", it.GetUserData()}, {"meta-data", it.GetMetaData()}, {"vendor-data", it.GetVendorData()}, {"ignition", it.GetIgnition()}} {
		if f.tmpl != "" {
			out = append(out, fmt.Sprintf("%s (%d bytes)", f.name, len(f.tmpl)))
		}
	}
	return dash(strings.Join(out, ", "))
}

// profileFlags are the flags of create and update.
type profileFlags struct {
	p       bootapiv1.Profile
	kernel  string
	initrds []string
	labels  []string
	// files are the installer template files by flag; keys the SSH keys.
	files map[string]*string
	keys  []string
}

// profileFields maps the flags to the fields of Profile.
var profileFields = map[string]string{
	"kernel": "kernel", "initrd": "initrds", "cmdline": "cmdline", "description": "description", "menu": "menu", "label": "labels",
	"preseed": "installer.preseed", "kickstart": "installer.kickstart", "user-data": "installer.user_data", "meta-data": "installer.meta_data",
	"vendor-data": "installer.vendor_data", "ignition": "installer.ignition", "ssh-key": "installer.ssh_authorized_keys",
}

// installerFlags are the template file flags, in the order help shows them.
var installerFlags = []struct {
	flag, what string
	set        func(*bootapiv1.InstallerTemplates, string)
}{
	{"preseed", "Debian installer preseed", func(it *bootapiv1.InstallerTemplates, s string) { it.Preseed = s }},
	{"kickstart", "kickstart", func(it *bootapiv1.InstallerTemplates, s string) { it.Kickstart = s }},
	{"user-data", "cloud-init user-data", func(it *bootapiv1.InstallerTemplates, s string) { it.UserData = s }},
	{"meta-data", "cloud-init meta-data", func(it *bootapiv1.InstallerTemplates, s string) { it.MetaData = s }},
	{"vendor-data", "cloud-init vendor-data", func(it *bootapiv1.InstallerTemplates, s string) { it.VendorData = s }},
	{"ignition", "Ignition config", func(it *bootapiv1.InstallerTemplates, s string) { it.Ignition = s }},
}

func (f *profileFlags) bind(g *Global, cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.kernel, "kernel", "", "kernel: artifact name or http(s) URL")
	fs.StringArrayVar(&f.initrds, "initrd", nil, "initrd: artifact name or http(s) URL (repeatable, in order)")
	fs.StringVar(&f.p.Cmdline, "cmdline", "", "kernel command line template (see: bootctl profiles fields)")
	fs.StringVar(&f.p.Description, "description", "", "description, shown in the boot menu")
	fs.BoolVar(&f.p.Menu, "menu", false, "offer the profile in the boot menu")
	fs.StringArrayVar(&f.labels, "label", nil, "label key=value (repeatable)")
	f.files = map[string]*string{}
	for _, fl := range installerFlags {
		f.files[fl.flag] = fs.String(fl.flag, "", "FILE: template of the "+fl.what+" served to the profile's jobs (empty: none; see docs/installer.md)")
	}
	fs.StringArrayVar(&f.keys, "ssh-key", nil, "SSH public key every installed machine gets (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("kernel", complete(g, artifactNames))
	_ = cmd.RegisterFlagCompletionFunc("initrd", complete(g, artifactNames))
	fields := map[string]string{"profile.name": "NAME", "profile": "NAME", "name": "NAME"}
	for flag, f := range profileFields {
		fields["profile."+f] = "--" + flag
	}
	withFields(cmd, fields)
}

func (f *profileFlags) profile(name string) (*bootapiv1.Profile, error) {
	p := &f.p
	p.Name = name
	if f.kernel != "" {
		p.Kernel = ref(f.kernel)
	}
	for _, i := range f.initrds {
		p.Initrds = append(p.Initrds, ref(i))
	}
	var err error
	p.Labels, err = parseLabels(f.labels)
	if err != nil {
		return nil, err
	}
	it := &bootapiv1.InstallerTemplates{SshAuthorizedKeys: f.keys}
	for flag, file := range f.files {
		if *file == "" {
			continue
		}
		b, err := os.ReadFile(*file)
		if err != nil {
			return nil, usageErrorf("--%s: %v", flag, err)
		}
		for _, fl := range installerFlags {
			if fl.flag == flag {
				fl.set(it, string(b))
			}
		}
	}
	p.Installer = it
	return p, nil
}

func profilesGetCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "get NAME",
		Aliases:           []string{"show"},
		Short:             "Show one profile",
		Example:           `  bootctl profiles get debian-12`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, profileNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.GetProfile(ctx, &bootapiv1.GetProfileRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return showProfile(g, r.GetProfile())
		},
	}
	return withFields(cmd, map[string]string{"name": "NAME"})
}

func profilesCreateCommand(g *Global) *cobra.Command {
	var f profileFlags
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a profile",
		Example: `  bootctl profiles create debian-12 --kernel debian/linux --initrd debian/initrd.gz \
      --cmdline 'console=ttyS0 hostname={{.Machine.Hostname}}' --menu --description "Debian 12"`,
		Args: argNames("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.profile(args[0])
			if err != nil {
				return err
			}
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: p})
			if err != nil {
				return err
			}
			return showProfile(g, r.GetProfile())
		},
	}
	f.bind(g, cmd)
	return cmd
}

func profilesUpdateCommand(g *Global) *cobra.Command {
	var f profileFlags
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a profile: only the flags given change",
		Example: `  bootctl profiles update debian-12 --cmdline 'console=ttyS0 quiet'
  bootctl profiles update debian-12 --initrd debian/initrd.gz --initrd debian/firmware.cpio
  bootctl profiles update debian-12 --menu=false`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, profileNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.profile(args[0])
			if err != nil {
				return err
			}
			mask := changedFields(cmd.Flags(), profileFields)
			if len(mask.GetPaths()) == 0 {
				return usageErrorf("%s: nothing to change: give at least one flag", cmd.CommandPath())
			}
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.UpdateProfile(ctx, &bootapiv1.UpdateProfileRequest{Profile: p, UpdateMask: mask})
			if err != nil {
				return err
			}
			return showProfile(g, r.GetProfile())
		},
	}
	f.bind(g, cmd)
	return cmd
}

func profilesDeleteCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete NAME",
		Aliases:           []string{"rm"},
		Short:             "Delete a profile no machine, site or open job uses",
		Example:           `  bootctl profiles delete debian-11`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, profileNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.DeleteProfile(ctx, &bootapiv1.DeleteProfileRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted profile %s\n", args[0])
				return err
			})
		},
	}
	return withFields(cmd, map[string]string{"name": "NAME"})
}
