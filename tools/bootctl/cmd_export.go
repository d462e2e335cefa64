package main

import (
	"github.com/bootchain/bootchain/tools/bootctl/internal/fleet"
	"github.com/spf13/cobra"
)

func exportCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:   "export",
		Short: "Write sites, profiles and registered machines as a fleet file",
		Long: `export writes what bootapi holds in the format "bootctl apply -f" reads:
YAML (or JSON with -o json) with lists "profiles", "sites" and "machines",
sorted by name. Server-set fields (timestamps, facts) and discovered machines
are left out, so "bootctl export | bootctl apply -f -" changes nothing.`,
		Example: `  bootctl export > fleet.yaml
  bootctl export -o json`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cur, err := fetchFleet(cmd.Context(), g, false)
			if err != nil {
				return err
			}
			b, err := fleet.Marshal(cur, g.Output == "json")
			if err != nil {
				return err
			}
			_, err = g.Out.Write(b)
			return err
		},
	}
}
