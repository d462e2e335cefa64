package main

import (
	"fmt"
	"io"

	"github.com/bootchain/bootchain/pkg/diagnose"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
)

func diagnoseCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diagnose MAC",
		Short: "Say where a machine's latest boot stopped, why, and what to do next",
		Long: `Show the diagnosis of a machine's latest boot: the hop where it stopped, the
service that saw it, the likely cause and the next step. A failed or stalled
boot has the diagnosis bootapi recorded; for one still going, bootapi works it
out from the hops so far, and there is none while every stage is within its
timeout. The classes are described in docs/sessions.md.`,
		Example:           `  bootctl diagnose 52:54:00:12:34:56`,
		Args:              argNames("MAC"),
		ValidArgsFunction: firstArg(g, machineMACs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sessionClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.DiagnoseMachine(ctx, &bootapiv1.DiagnoseMachineRequest{Mac: args[0]})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error { return diagnosisDetail(w, r) })
		},
	}
	return withFields(cmd, map[string]string{"mac": "MAC"})
}

func diagnosisDetail(w io.Writer, r *bootapiv1.DiagnoseMachineResponse) error {
	s, d := r.GetSession(), r.GetDiagnosis()
	fields := []field{
		{"Machine", s.GetMac()}, {"State", sessionState(s.GetState())}, {"Job", dash(s.GetJobId())}, {"Trace", dash(s.GetTraceId())},
	}
	if d == nil {
		last := "no hop yet"
		if hops := s.GetHops(); len(hops) > 0 {
			last = "last hop " + hops[len(hops)-1].GetName()
		}
		fields = append(fields, field{"Diagnosis", fmt.Sprintf("none: the boot goes on (%s)", last)})
		return writeDetail(w, fields)
	}
	fields = append(fields,
		field{"Diagnosis", diagnose.ClassName(d.GetClass())},
		field{"Hop", fmt.Sprintf("%s (%s)", dash(d.GetHop()), dash(d.GetService()))},
		field{"Cause", d.GetCause()},
		field{"Next step", d.GetNextStep()},
		field{"Diagnosed", ts(d.GetTime())},
	)
	return writeDetail(w, fields)
}
