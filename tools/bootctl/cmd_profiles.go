package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

func profileClient(g *Global) (bootapiv1.ProfileServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewProfileServiceClient(cc), nil
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

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func runProfiles(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "profiles", args, map[string]func(context.Context, *Global, []string) error{
		"list": func(ctx context.Context, g *Global, args []string) error {
			fs := flag.NewFlagSet("profiles list", flag.ContinueOnError)
			sel := fs.String("l", "", "label selector")
			if err := fs.Parse(args); err != nil {
				return err
			}
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.ListProfiles(ctx, &bootapiv1.ListProfilesRequest{LabelSelector: *sel})
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, r)
			}
			var rows [][]string
			for _, p := range r.GetProfiles() {
				var initrds []string
				for _, i := range p.GetInitrds() {
					initrds = append(initrds, refString(i))
				}
				menu := "no"
				if p.GetMenu() {
					menu = "yes"
				}
				rows = append(rows, []string{p.GetName(), refString(p.GetKernel()), dash(strings.Join(initrds, ",")), menu, dash(p.GetDescription())})
			}
			return printTable(g, []string{"NAME", "KERNEL", "INITRDS", "MENU", "DESCRIPTION"}, rows)
		},
		"get": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("profiles get NAME")
			}
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.GetProfile(ctx, &bootapiv1.GetProfileRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetProfile())
		},
		"create": func(ctx context.Context, g *Global, args []string) error {
			if len(args) < 1 {
				return fmt.Errorf("profiles create NAME -kernel K [-initrd I]... [-cmdline C] [-menu] [-description D]")
			}
			p := &bootapiv1.Profile{Name: args[0]}
			var initrds listFlag
			labels := labelsFlag{}
			fs := flag.NewFlagSet("profiles create", flag.ContinueOnError)
			kernel := fs.String("kernel", "", "kernel: artifact name or http(s) URL")
			fs.Var(&initrds, "initrd", "initrd: artifact name or URL (repeatable)")
			fs.StringVar(&p.Cmdline, "cmdline", "", "kernel command line template")
			fs.StringVar(&p.Description, "description", "", "description shown in the menu")
			fs.BoolVar(&p.Menu, "menu", false, "offer in the boot menu")
			fs.Var(labels, "label", "label key=value (repeatable)")
			if err := fs.Parse(args[1:]); err != nil {
				return err
			}
			if *kernel != "" {
				p.Kernel = ref(*kernel)
			}
			for _, i := range initrds {
				p.Initrds = append(p.Initrds, ref(i))
			}
			p.Labels = labels
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: p})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetProfile())
		},
		"delete": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("profiles delete NAME")
			}
			c, err := profileClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			if _, err := c.DeleteProfile(ctx, &bootapiv1.DeleteProfileRequest{Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintln(g.Out, "deleted", args[0])
			return nil
		},
	})
}
