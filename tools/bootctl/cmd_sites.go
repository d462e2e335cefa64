package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
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
			fields = append(fields,
				field{"DHCP subnets", dash(strings.Join(subnets, ", "))},
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
	tftp, extraCmdline            string
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
	fs.StringVar(&f.tftp, "tftp", "", "tftpd address (DHCP next-server)")
	fs.StringVar(&f.extraCmdline, "extra-cmdline", "", "kernel parameters added to every boot")
	fs.StringVar(&f.discovery, "discovery", "", "unknown machines: "+strings.Join(discoveryWords, ", "))
	_ = cmd.RegisterFlagCompletionFunc("action", words(actionWords...))
	_ = cmd.RegisterFlagCompletionFunc("discovery", words(discoveryWords...))
	_ = cmd.RegisterFlagCompletionFunc("profile", complete(g, profileNames))
	withFields(cmd, map[string]string{
		"name": "NAME", "site.name": "NAME", "site": "NAME", "site.default_action": "--action", "site.default_profile": "--profile",
		"site.bootapi_url": "--bootapi-url", "site.artifact_url": "--artifact-url", "site.tftp_server": "--tftp",
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
		"tftp": &s.TftpServer, "extra-cmdline": &s.ExtraCmdline,
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
		Short:   "Create or replace a site",
		Long: `put writes the whole site: fields neither in --file nor in a flag are cleared.
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

func sitesUpdateCommand(g *Global) *cobra.Command {
	var f siteFlags
	cmd := &cobra.Command{
		Use:               "update NAME",
		Short:             "Change a site: only the flags given change",
		Example:           `  bootctl sites update lab --action menu`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, siteNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().NFlag() == 0 {
				return usageErrorf("%s: nothing to change: give at least one flag", cmd.CommandPath())
			}
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			r, err := c.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: args[0]})
			cancel()
			if err != nil {
				return err
			}
			// The API has no masked update for sites: read, change, write back.
			s := r.GetSite()
			if err := f.apply(cmd, s); err != nil {
				return err
			}
			return putSite(cmd, g, s)
		},
	}
	f.bind(g, cmd, false)
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
