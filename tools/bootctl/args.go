package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// legacyArgs rewrites single-dash long flags ("-mac X", "-profile=P"), which
// bootctl took before it used pflag and which scripts and docs still use, into
// "--mac X". pflag would read "-mac" as the shorthands -m -a -c. Only the names
// of existing long flags are rewritten, and nothing after "--".
func legacyArgs(root *cobra.Command, args []string) []string {
	long := map[string]bool{}
	add := func(fs *pflag.FlagSet) {
		fs.VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		add(c.LocalNonPersistentFlags())
		add(c.PersistentFlags())
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	for old := range legacyFlagNames {
		long[old] = true
	}
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if name == "timeout" && !strings.HasPrefix(a, "--") && jobsCreate(args[:i]) {
			// `jobs create -timeout D` set the job's timeout before --timeout
			// became every call's: keep old scripts meaning what they meant.
			a = "--job-timeout"
			if hasValue {
				a += "=" + value
			}
		} else if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && long[name] {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

// jobsCreate reports whether the words before are "jobs create".
func jobsCreate(before []string) bool {
	for i := 0; i+1 < len(before); i++ {
		if before[i] == "jobs" && before[i+1] == "create" {
			return true
		}
	}
	return false
}

// legacyFlagNames maps the global flags' old names to their names now.
var legacyFlagNames = map[string]string{
	"bootapi": addrFlag("bootapi"), "artifactstore": addrFlag("artifactstore"),
	"dhcpd": addrFlag("dhcpd"), "tftpd": addrFlag("tftpd"),
}

// legacyNamesOf returns the old names of a global flag, whose
// BOOTCHAIN_<OLD NAME> variables still count.
func legacyNamesOf(name string) []string {
	var old []string
	for o, n := range legacyFlagNames {
		if n == name {
			old = append(old, o)
		}
	}
	return old
}

// normalizeFlag lets the old names of the global flags work as aliases.
func normalizeFlag(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if n, ok := legacyFlagNames[name]; ok {
		return pflag.NormalizedName(n)
	}
	return pflag.NormalizedName(name)
}

// usageError is a command line bootctl cannot run: a wrong flag or argument.
// It exits with status 2 and points at --help.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// argNames checks that a command got exactly the positional arguments named
// ("MAC", "NAME"), saying which one is missing or extra.
func argNames(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usageErrorf("%s: missing %s", cmd.CommandPath(), strings.Join(names[len(args):], " "))
		case len(args) > len(names):
			return usageErrorf("%s: unexpected argument %q", cmd.CommandPath(), args[len(names)])
		}
		for i, a := range args {
			if strings.HasPrefix(a, "-") {
				return usageErrorf("%s: %s %q looks like a flag", cmd.CommandPath(), names[i], a)
			}
		}
		return nil
	}
}

// noArgs refuses positional arguments, naming a subcommand that comes close.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if !cmd.HasSubCommands() {
		return usageErrorf("%s: unexpected argument %q", cmd.CommandPath(), args[0])
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return &usageError{msg: msg}
}

// group makes cmd a command that only holds subcommands: on its own it prints
// its help, and an unknown subcommand is a usage error.
func group(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.Args = noArgs
	if cmd.RunE == nil {
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	cmd.AddCommand(subs...)
	return cmd
}
