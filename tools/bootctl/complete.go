package main

import (
	"context"
	"strings"
	"time"

	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
)

// completionTimeout bounds a completion's call to a server: a shell waiting on
// a tab press must not hang on a dead address.
const completionTimeout = 2 * time.Second

// completer returns the candidates for a word from a server.
type completer func(ctx context.Context, g *Global, prefix string) ([]string, error)

// complete turns a completer into a cobra completion function; a server that
// cannot be reached completes nothing, without files.
func complete(g *Global, c completer) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if err := g.resolve(cmd); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		words, err := c(ctx, g, toComplete)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var out []cobra.Completion
		for _, w := range words {
			if strings.HasPrefix(w, toComplete) {
				out = append(out, w)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// firstArg completes the first positional argument only.
func firstArg(g *Global, c completer) cobra.CompletionFunc {
	f := complete(g, c)
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, args, toComplete)
	}
}

// words completes from a fixed list.
func words(ws ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(ws, cobra.ShellCompDirectiveNoFileComp)
}

// Completion candidates carry a description after a tab, shown by zsh and fish.
func described(word, desc string) string {
	if desc == "" {
		return word
	}
	return word + "\t" + desc
}

func machineMACs(ctx context.Context, g *Global, _ string) ([]string, error) {
	c, err := machineClient(g)
	if err != nil {
		return nil, err
	}
	r, err := c.ListMachines(ctx, &bootapiv1.ListMachinesRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range r.GetMachines() {
		out = append(out, described(m.GetMac(), m.GetHostname()))
	}
	return out, nil
}

func profileNames(ctx context.Context, g *Global, _ string) ([]string, error) {
	c, err := profileClient(g)
	if err != nil {
		return nil, err
	}
	r, err := c.ListProfiles(ctx, &bootapiv1.ListProfilesRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range r.GetProfiles() {
		out = append(out, described(p.GetName(), p.GetDescription()))
	}
	return out, nil
}

func siteNames(ctx context.Context, g *Global, _ string) ([]string, error) {
	c, err := siteClient(g)
	if err != nil {
		return nil, err
	}
	r, err := c.ListSites(ctx, &bootapiv1.ListSitesRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range r.GetSites() {
		out = append(out, s.GetName())
	}
	return out, nil
}

func artifactNames(ctx context.Context, g *Global, prefix string) ([]string, error) {
	c, err := artifactClient(g)
	if err != nil {
		return nil, err
	}
	r, err := c.List(ctx, &artifactv1.ListRequest{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range r.GetArtifacts() {
		out = append(out, described(a.GetName(), humanBytes(a.GetSize())))
	}
	return out, nil
}

func jobIDs(ctx context.Context, g *Global, _ string) ([]string, error) {
	c, err := jobClient(g)
	if err != nil {
		return nil, err
	}
	r, err := c.ListJobs(ctx, &bootapiv1.ListJobsRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, j := range r.GetJobs() {
		out = append(out, described(j.GetId(), j.GetMac()+" "+j.GetProfile()+" "+jobStateName(j.GetState())))
	}
	return out, nil
}

// registerGlobalCompletions completes the global flags with fixed values.
func registerGlobalCompletions(root *cobra.Command) {
	_ = root.RegisterFlagCompletionFunc("output", words("table", "json", "yaml"))
}
