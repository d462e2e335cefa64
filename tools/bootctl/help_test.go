package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// allCommands returns every command of the tree, cobra's help and completion
// included, root first.
func allCommands() []*cobra.Command {
	root := newRootCommand(newGlobal(&bytes.Buffer{}))
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var all []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		all = append(all, c)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return all
}

// pathArgs is a command's path without "bootctl".
func pathArgs(c *cobra.Command) []string { return strings.Fields(c.CommandPath())[1:] }

// TestHelp checks every command's help against testdata/help, and that -h,
// --help and "help CMD" print it without calling a server (no server runs
// here, so a call would fail).
func TestHelp(t *testing.T) {
	for _, c := range allCommands() {
		path := pathArgs(c)
		name := strings.Join(append([]string{"bootctl"}, path...), "_")
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(context.Background(), append(path, "--help"), &out, &errb); code != 0 {
				t.Fatalf("--help: exit %d: %s", code, errb.String())
			}
			golden(t, "help/"+name, out.String())
			forms := [][]string{append(path, "-h"), append([]string{"help"}, path...), append([]string{"-h"}, path...)}
			if len(path) > 1 {
				forms = append(forms, append([]string{path[0], "-h"}, path[1:]...))
			}
			for _, args := range forms {
				var o2, e2 bytes.Buffer
				if code := run(context.Background(), append([]string{"--bootapi-addr", "127.0.0.1:1"}, args...), &o2, &e2); code != 0 || o2.String() != out.String() {
					t.Errorf("%q: exit %d, stderr %q; want the --help text", args, code, e2.String())
				}
			}
		})
	}
}

// TestHelpHasExamples: every command that does something shows how.
func TestHelpHasExamples(t *testing.T) {
	for _, c := range allCommands() {
		if c.Runnable() && !c.HasSubCommands() && c.Example == "" && c.Root() != c && c.Parent().Name() != "completion" && c.Name() != "help" {
			t.Errorf("%s: no examples", c.CommandPath())
		}
	}
}
