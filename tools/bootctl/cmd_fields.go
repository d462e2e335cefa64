package main

import (
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/structpb"
)

// templateField is one value a profile's cmdline template may use. The list
// mirrors bootapi's script.TemplateData; a test compares the two.
type templateField struct{ expr, desc string }

var templateFields = []templateField{
	{"{{.Machine.MAC}}", "the machine's MAC address, as 52:54:00:12:34:56"},
	{"{{.Machine.Hostname}}", "the machine's host name (machines register --hostname)"},
	{"{{.Machine.Site}}", "the machine's site"},
	{`{{index .Machine.Labels "KEY"}}`, "the machine's label KEY (machines register --label KEY=VALUE)"},
	{"{{.Profile.Name}}", "the profile's name"},
	{"{{.Job.ID}}", "the ID of the job being booted; empty without a job"},
	{`{{.InstallerURL "FILE"}}`, "URL of the job's installer FILE (preseed, kickstart, user-data, meta-data, vendor-data, ignition; \"\" the NoCloud seed); empty without a job"},
}

func profilesFieldsCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:   "fields",
		Short: "List what a profile's --cmdline template may use",
		Long: `A profile's command line is a Go text/template, rendered for each boot. These
are the values it may use. Each value must be a single word: bootapi refuses a
boot whose values hold spaces or quotes rather than let them add kernel
parameters. The installer files' templates (--preseed and the others) see more:
docs/installer.md.`,
		Example: `  bootctl profiles fields
  bootctl profiles create debian-12 --kernel debian/linux \
      --cmdline 'console=ttyS0 hostname={{.Machine.Hostname}} rack={{index .Machine.Labels "rack"}}'`,
		Args: argNames(),
		RunE: func(*cobra.Command, []string) error {
			list := make([]any, len(templateFields))
			rows := make([][]string, len(templateFields))
			for i, f := range templateFields {
				list[i] = map[string]any{"field": f.expr, "description": f.desc}
				rows[i] = []string{f.expr, f.desc}
			}
			m, err := structpb.NewStruct(map[string]any{"fields": list})
			if err != nil {
				return err
			}
			return g.show(m, func(w io.Writer) error {
				return writeTable(w, []string{"FIELD", "DESCRIPTION"}, rows)
			})
		},
	}
}
