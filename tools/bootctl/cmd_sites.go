package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"sigs.k8s.io/yaml"
)

func siteClient(g *Global) (bootapiv1.SiteServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewSiteServiceClient(cc), nil
}

func sitesCommand(g *Global) *cobra.Command {
	return group(&cobra.Command{
		Use:     "sites",
		Aliases: []string{"site"},
		Short:   "List, show, put, update and delete sites",
		Long: `A site is one place machines boot in: its default action, the URLs machines
reach bootapi and artifactstore at, its TFTP server and its DHCP settings.`,
	},
		sitesListCommand(g),
		sitesGetCommand(g),
		sitesPutCommand(g),
		sitesUpdateCommand(g),
		sitesDeleteCommand(g),
	)
}

func sitesListCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sites",
		Example: `  bootctl sites list`,
		Args:    argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.ListSites(ctx, &bootapiv1.ListSitesRequest{})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error {
				rows := make([][]string, 0, len(r.GetSites()))
				for _, s := range r.GetSites() {
					rows = append(rows, []string{s.GetName(), actionName(s.GetDefaultAction(), s.GetDefaultProfile()), dash(s.GetBootapiUrl()), dash(s.GetArtifactUrl()), dash(s.GetTftpServer()), dhcpMode(s)})
				}
				return writeTable(w, []string{"NAME", "DEFAULT", "BOOTAPI", "ARTIFACTS", "TFTP", "DHCP"}, rows)
			})
		},
	}
}

func dhcpMode(s *bootapiv1.Site) string {
	if s.GetDhcp() == nil {
		return "-"
	}
	return enumName(s.GetDhcp().GetMode().String(), "DHCP_MODE_")
}

func discoveryName(p bootapiv1.DiscoveryPolicy) string {
	if p == bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_UNSPECIFIED {
		return "(default)"
	}
	return enumName(p.String(), "DISCOVERY_POLICY_")
}

func showSite(g *Global, s *bootapiv1.Site) error {
	return g.show(s, func(w io.Writer) error {
		fields := []field{
			{"Name", s.GetName()},
			{"Default", actionName(s.GetDefaultAction(), s.GetDefaultProfile())},
			{"Bootapi URL", dash(s.GetBootapiUrl())},
			{"Artifact URL", dash(s.GetArtifactUrl())},
			{"Callback URL", dash(s.GetCallbackUrl())},
			{"TFTP server", dash(s.GetTftpServer())},
			{"Discovery", discoveryName(s.GetDiscoveryPolicy())},
			{"Extra cmdline", dash(s.GetExtraCmdline())},
			{"DHCP", dhcpMode(s)},
		}
		if d := s.GetDhcp(); d != nil {
			var subnets []string
			for _, n := range d.GetSubnets() {
				subnets = append(subnets, n.GetCidr())
			}
			fields = append(fields, field{"DHCP subnets", dash(strings.Join(subnets, ", "))})
			for _, n := range d.GetSubnets() {
				var pools []string
				for _, p := range n.GetPools() {
					pools = append(pools, p.GetStart()+"-"+p.GetEnd())
				}
				fields = append(fields,
					field{"  " + n.GetCidr() + " pools", dash(strings.Join(pools, ", "))},
					field{"  " + n.GetCidr() + " routers", dash(strings.Join(n.GetRouters(), ", "))},
					field{"  " + n.GetCidr() + " DNS", dash(strings.Join(n.GetDnsServers(), ", "))},
				)
			}
			fields = append(fields,
				field{"DHCP unknown clients", enumName(d.GetUnknownClients().String(), "DHCP_UNKNOWN_CLIENTS_")},
				field{"DHCP lease time", d.GetLeaseTime().AsDuration().String()},
			)
		}
		fields = append(fields, field{"Updated", ts(s.GetUpdateTime())})
		return writeDetail(w, fields)
	})
}

func sitesGetCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "get NAME",
		Aliases:           []string{"show"},
		Short:             "Show one site",
		Example:           `  bootctl sites get lab` + "\n" + `  bootctl sites get lab -o yaml > lab.yaml   # edit, then: bootctl sites put lab -f lab.yaml`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, siteNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return showSite(g, r.GetSite())
		},
	}
	return withFields(cmd, map[string]string{"name": "NAME"})
}

// siteFlags are the flags of put and update.
type siteFlags struct {
	file, action, discovery       string
	profile, bootapiURL, artifURL string
	tftp, extraCmdline, callback  string
}

// siteFields maps the flags of put and update to the update mask paths they set.
var siteFields = map[string]string{
	"action": "default_action", "profile": "default_profile", "bootapi-url": "bootapi_url",
	"artifact-url": "artifact_url", "callback-url": "callback_url", "tftp": "tftp_server",
	"extra-cmdline": "extra_cmdline", "discovery": "discovery_policy",
}

var discoveryWords = enumWords("DISCOVERY_POLICY_", bootapiv1.DiscoveryPolicy_value)

func (f *siteFlags) bind(g *Global, cmd *cobra.Command, withFile bool) {
	fs := cmd.Flags()
	if withFile {
		fs.StringVarP(&f.file, "file", "f", "", "read the site from this YAML or JSON file (as -o yaml prints it); flags override it")
	}
	fs.StringVar(&f.action, "action", "", "default action: "+strings.Join(actionWords, ", "))
	fs.StringVar(&f.profile, "profile", "", "default profile, with --action profile")
	fs.StringVar(&f.bootapiURL, "bootapi-url", "", "bootapi base URL as machines reach it")
	fs.StringVar(&f.artifURL, "artifact-url", "", "artifactstore base URL as machines reach it")
	fs.StringVar(&f.callback, "callback-url", "", "base URL installers report to: a load balancer or VIP in front of bootapi replicas")
	fs.StringVar(&f.tftp, "tftp", "", "tftpd address (DHCP next-server)")
	fs.StringVar(&f.extraCmdline, "extra-cmdline", "", "kernel parameters added to every boot")
	fs.StringVar(&f.discovery, "discovery", "", "unknown machines: "+strings.Join(discoveryWords, ", "))
	_ = cmd.RegisterFlagCompletionFunc("action", words(actionWords...))
	_ = cmd.RegisterFlagCompletionFunc("discovery", words(discoveryWords...))
	_ = cmd.RegisterFlagCompletionFunc("profile", complete(g, profileNames))
	withFields(cmd, map[string]string{
		"name": "NAME", "site.name": "NAME", "site": "NAME", "site.default_action": "--action", "site.default_profile": "--profile",
		"site.bootapi_url": "--bootapi-url", "site.artifact_url": "--artifact-url", "site.tftp_server": "--tftp", "site.callback_url": "--callback-url",
		"site.extra_cmdline": "--extra-cmdline", "site.discovery_policy": "--discovery",
	})
}

// apply sets the fields of the flags given on s.
func (f *siteFlags) apply(cmd *cobra.Command, s *bootapiv1.Site) error {
	fs := cmd.Flags()
	if fs.Changed("action") {
		a, err := parseAction("action", f.action)
		if err != nil {
			return err
		}
		s.DefaultAction = a
	}
	if fs.Changed("discovery") {
		v, err := parseEnum("discovery", f.discovery, "DISCOVERY_POLICY_", bootapiv1.DiscoveryPolicy_value)
		if err != nil {
			return err
		}
		s.DiscoveryPolicy = bootapiv1.DiscoveryPolicy(v)
	}
	for flag, dst := range map[string]*string{
		"profile": &s.DefaultProfile, "bootapi-url": &s.BootapiUrl, "artifact-url": &s.ArtifactUrl,
		"tftp": &s.TftpServer, "extra-cmdline": &s.ExtraCmdline, "callback-url": &s.CallbackUrl,
	} {
		if fs.Changed(flag) {
			*dst, _ = fs.GetString(flag)
		}
	}
	return nil
}

// readSite reads a site from YAML or JSON in protojson's field names.
func readSite(path string) (*bootapiv1.Site, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &bootapiv1.Site{}
	if err := protojson.Unmarshal(j, s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func sitesPutCommand(g *Global) *cobra.Command {
	var f siteFlags
	cmd := &cobra.Command{
		Use:     "put NAME",
		Aliases: []string{"create"},
		Short:   "Create or replace a whole site",
		Long: `put writes the whole site record: every field neither in --file nor in a flag
is cleared, the DHCP settings (pools, routers, DNS, boot files) included. Use it to
create a site or to write back a file from "bootctl sites get NAME -o yaml".
To change some fields of a site and keep the rest, use "bootctl sites update".`,
		Example: `  bootctl sites put lab --action local-disk --bootapi-url http://10.0.0.5:8080
  bootctl sites put lab -f lab.yaml`,
		Args: argNames("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := &bootapiv1.Site{}
			if f.file != "" {
				var err error
				if s, err = readSite(f.file); err != nil {
					return err
				}
			}
			s.Name = args[0]
			if err := f.apply(cmd, s); err != nil {
				return err
			}
			return putSite(cmd, g, s)
		},
	}
	f.bind(g, cmd, true)
	return cmd
}

func putSite(cmd *cobra.Command, g *Global, s *bootapiv1.Site) error {
	c, err := siteClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := g.call(cmd.Context())
	defer cancel()
	r, err := c.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: s})
	if err != nil {
		return err
	}
	return showSite(g, r.GetSite())
}

// subnetFlags edit one DHCP subnet of a site in sites update.
type subnetFlags struct {
	cidr, domain       string
	pools, routers, dn []string
	bootFiles          []string
	revision           int64
}

func (f *subnetFlags) bind(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.cidr, "subnet", "", "DHCP subnet (CIDR) that --pool, --router, --dns and --domain change; added when the site lacks it")
	fs.StringArrayVar(&f.pools, "pool", nil, "address range START-END of --subnet (repeatable; replaces its pools)")
	fs.StringArrayVar(&f.routers, "router", nil, "router of --subnet (repeatable; replaces its routers)")
	fs.StringArrayVar(&f.dn, "dns", nil, "DNS server of --subnet (repeatable; replaces its DNS servers)")
	fs.StringVar(&f.domain, "domain", "", "domain name of --subnet")
	fs.StringArrayVar(&f.bootFiles, "boot-file", nil, "boot file per client kind, KIND=FILE (bios, uefi-x64, uefi-arm64, http-x64, http-arm64); KIND= removes it (repeatable)")
	fs.Int64Var(&f.revision, "revision", 0, "update only if the site is still at this revision (as get -o yaml prints it)")
}

// subnetFlagNames are the flags that edit a subnet.
var subnetFlagNames = []string{"pool", "router", "dns", "domain"}

// editDhcp applies the subnet and boot file flags to s (the stored site) and
// returns the mask paths they change.
func (f *subnetFlags) editDhcp(cmd *cobra.Command, s *bootapiv1.Site) ([]string, error) {
	fs := cmd.Flags()
	var paths []string
	subnet := slices.ContainsFunc(subnetFlagNames, fs.Changed)
	if fs.Changed("subnet") && !subnet {
		return nil, usageErrorf("--subnet: say what to change with --pool, --router, --dns or --domain")
	}
	if subnet {
		if f.cidr == "" {
			return nil, usageErrorf("--pool, --router, --dns and --domain need --subnet CIDR")
		}
		if s.Dhcp == nil {
			s.Dhcp = &bootapiv1.SiteDhcp{}
		}
		var n *bootapiv1.DhcpSubnet
		for _, x := range s.Dhcp.GetSubnets() {
			if x.GetCidr() == f.cidr {
				n = x
			}
		}
		if n == nil {
			n = &bootapiv1.DhcpSubnet{Cidr: f.cidr}
			s.Dhcp.Subnets = append(s.Dhcp.Subnets, n)
		}
		if fs.Changed("pool") {
			n.Pools = nil
			for _, p := range f.pools {
				start, end, ok := strings.Cut(p, "-")
				if !ok || start == "" || end == "" {
					return nil, usageErrorf("--pool %q: want START-END", p)
				}
				n.Pools = append(n.Pools, &bootapiv1.DhcpPool{Start: start, End: end})
			}
		}
		if fs.Changed("router") {
			n.Routers = f.routers
		}
		if fs.Changed("dns") {
			n.DnsServers = f.dn
		}
		if fs.Changed("domain") {
			n.DomainName = f.domain
		}
		paths = append(paths, "dhcp.subnets")
	}
	if fs.Changed("boot-file") {
		if s.Dhcp == nil {
			s.Dhcp = &bootapiv1.SiteDhcp{}
		}
		if s.Dhcp.BootFiles == nil {
			s.Dhcp.BootFiles = map[string]string{}
		}
		for _, kv := range f.bootFiles {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, usageErrorf("--boot-file %q: want KIND=FILE", kv)
			}
			if v == "" {
				delete(s.Dhcp.BootFiles, k)
			} else {
				s.Dhcp.BootFiles[k] = v
			}
		}
		paths = append(paths, "dhcp.boot_files")
	}
	return paths, nil
}

func sitesUpdateCommand(g *Global) *cobra.Command {
	var f siteFlags
	var sf subnetFlags
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a site: only the flags given change",
		Long: `update changes the fields its flags name and keeps every other field of the
site: it sends bootapi only those fields (a field mask), so a change made meanwhile
by someone else to another field is kept too.

Subnet flags (--pool, --router, --dns, --domain) edit the subnet --subnet names
and replace that subnet's list; --boot-file changes one client kind. These read the
site first and write back only if nobody changed it in between (else: run again).
With --revision, any update writes only if the site is still at that revision.`,
		Example: `  bootctl sites update lab --action menu
  bootctl sites update lab --extra-cmdline "console=ttyS0,115200"
  bootctl sites update lab --subnet 10.0.0.0/24 --pool 10.0.0.100-10.0.0.199 --router 10.0.0.1
  bootctl sites update lab --boot-file uefi-x64=ipxe.efi
  bootctl sites update lab --callback-url https://boot.example.net`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, siteNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			s := &bootapiv1.Site{Name: args[0]}
			if err := f.apply(cmd, s); err != nil {
				return err
			}
			paths := changedFields(fs, siteFields).GetPaths()
			dhcp := slices.ContainsFunc(append([]string{"subnet", "boot-file"}, subnetFlagNames...), fs.Changed)
			if len(paths) == 0 && !dhcp {
				return usageErrorf("%s: nothing to change: give at least one flag", cmd.CommandPath())
			}
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			rev := sf.revision
			if dhcp {
				// Lists and maps are replaced whole: edit the stored ones and
				// write back only if they are still what we read.
				ctx, cancel := g.call(cmd.Context())
				r, err := c.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: args[0]})
				cancel()
				if err != nil {
					return err
				}
				if rev != 0 && r.GetSite().GetRevision() != rev {
					return fmt.Errorf("site %s is at revision %d, not %d: read it again", args[0], r.GetSite().GetRevision(), rev)
				}
				s.Dhcp = r.GetSite().GetDhcp()
				more, err := sf.editDhcp(cmd, s)
				if err != nil {
					return err
				}
				paths, rev = append(paths, more...), r.GetSite().GetRevision()
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{Site: s, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, Revision: rev})
			if err != nil {
				return err
			}
			return showSite(g, r.GetSite())
		},
	}
	f.bind(g, cmd, false)
	sf.bind(cmd)
	return cmd
}

func sitesDeleteCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete NAME",
		Aliases:           []string{"rm"},
		Short:             "Delete a site no machine belongs to",
		Example:           `  bootctl sites delete old-lab`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, siteNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.DeleteSite(ctx, &bootapiv1.DeleteSiteRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted site %s\n", args[0])
				return err
			})
		},
	}
	return withFields(cmd, map[string]string{"name": "NAME"})
}
