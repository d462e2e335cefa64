package main

import (
	"context"
	"flag"
	"fmt"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

func siteClient(g *Global) (bootapiv1.SiteServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewSiteServiceClient(cc), nil
}

func runSites(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "sites", args, map[string]func(context.Context, *Global, []string) error{
		"list": func(ctx context.Context, g *Global, args []string) error {
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.ListSites(ctx, &bootapiv1.ListSitesRequest{})
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, r)
			}
			var rows [][]string
			for _, s := range r.GetSites() {
				rows = append(rows, []string{s.GetName(), actionName(s.GetDefaultAction()), dash(s.GetBootapiUrl()), dash(s.GetArtifactUrl()), dash(s.GetTftpServer())})
			}
			return printTable(g, []string{"NAME", "DEFAULT", "BOOTAPI", "ARTIFACTS", "TFTP"}, rows)
		},
		"get": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("sites get NAME")
			}
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetSite())
		},
		"put": func(ctx context.Context, g *Global, args []string) error {
			if len(args) < 1 {
				return fmt.Errorf("sites put NAME [-action A] [-profile P] [-bootapi-url U] [-artifact-url U] [-tftp IP]")
			}
			s := &bootapiv1.Site{Name: args[0]}
			fs := flag.NewFlagSet("sites put", flag.ContinueOnError)
			action := fs.String("action", "", "default action: menu, local-disk, sanboot, shell, profile")
			fs.StringVar(&s.DefaultProfile, "profile", "", "default profile")
			fs.StringVar(&s.BootapiUrl, "bootapi-url", "", "bootapi base URL as machines reach it")
			fs.StringVar(&s.ArtifactUrl, "artifact-url", "", "artifactstore base URL as machines reach it")
			fs.StringVar(&s.TftpServer, "tftp", "", "tftpd address (next-server)")
			fs.StringVar(&s.ExtraCmdline, "extra-cmdline", "", "kernel parameters added to every boot")
			if err := fs.Parse(args[1:]); err != nil {
				return err
			}
			a, err := parseAction(*action)
			if err != nil {
				return err
			}
			s.DefaultAction = a
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: s})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetSite())
		},
		"delete": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("sites delete NAME")
			}
			c, err := siteClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			if _, err := c.DeleteSite(ctx, &bootapiv1.DeleteSiteRequest{Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintln(g.Out, "deleted", args[0])
			return nil
		},
	})
}
