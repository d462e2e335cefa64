package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
)

func sessionClient(g *Global) (bootapiv1.SessionServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewSessionServiceClient(cc), nil
}

func sessionState(s bootapiv1.SessionState) string { return enumName(s.String(), "SESSION_STATE_") }

var sessionStateWords = enumWords("SESSION_STATE_", bootapiv1.SessionState_value)

// sessionsCommand lists on its own ("bootctl sessions"), as it always did.
func sessionsCommand(g *Global) *cobra.Command {
	list := sessionsListCommand(g)
	cmd := &cobra.Command{
		Use:     "sessions",
		Aliases: []string{"session"},
		Short:   "List boot sessions (the same as sessions list)",
		Long: `A boot session is one boot of one machine, from its DHCP request to the
installer's last report, recorded hop by hop (dhcp, tftp, script, artifact,
report). "bootctl trace MAC" shows one session as a timeline.`,
		Example: `  bootctl sessions
  bootctl sessions --state failed
  bootctl sessions get 52:54:00:12:34:56`,
		RunE: list.RunE,
	}
	cmd.Flags().AddFlagSet(list.Flags())
	_ = cmd.RegisterFlagCompletionFunc("state", words(sessionStateWords...))
	return group(cmd, list, sessionsGetCommand(g, "get MAC", []string{"show", "trace"}))
}

func sessionsListCommand(g *Global) *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the latest boot session of each machine",
		Example: `  bootctl sessions list --state active`,
		Args:    argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &bootapiv1.ListSessionsRequest{}
			if state != "" {
				v, err := parseEnum("state", state, "SESSION_STATE_", bootapiv1.SessionState_value)
				if err != nil {
					return err
				}
				req.State = bootapiv1.SessionState(v)
			}
			c, err := sessionClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.ListSessions(ctx, req)
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error { return sessionTable(w, r.GetSessions()) })
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only sessions in this state: "+strings.Join(sessionStateWords, ", "))
	_ = cmd.RegisterFlagCompletionFunc("state", words(sessionStateWords...))
	return withFields(cmd, map[string]string{"state": "--state"})
}

// sessionTable has one row per session. STOPPED AT is when a session ended (its
// last change, once it is no longer active); HOP is where it failed, or the
// last hop it reached.
func sessionTable(w io.Writer, ss []*bootapiv1.BootSession) error {
	rows := make([][]string, 0, len(ss))
	for _, s := range ss {
		lastActivity, stopped := ago(s.GetUpdateTime()), "-"
		if s.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE {
			lastActivity, stopped = "-", ts(s.GetUpdateTime())
		}
		rows = append(rows, []string{s.GetMac(), dash(s.GetIp()), sessionState(s.GetState()), ts(s.GetStartTime()), lastActivity, stopped, dash(sessionHop(s)), dash(s.GetJobId()), dash(s.GetTraceId())})
	}
	return writeTable(w, []string{"MAC", "IP", "STATE", "STARTED", "LAST ACTIVITY", "STOPPED AT", "HOP", "JOB", "TRACE"}, rows)
}

// sessionHop is the hop a session failed at, else the last one it reached.
func sessionHop(s *bootapiv1.BootSession) string {
	if h := s.GetFailedHop(); h != "" {
		return h
	}
	if hops := s.GetHops(); len(hops) > 0 {
		return hops[len(hops)-1].GetName()
	}
	return ""
}

// traceCommand is "sessions get" under the name people look for.
func traceCommand(g *Global) *cobra.Command {
	return sessionsGetCommand(g, "trace MAC", nil)
}

func sessionsGetCommand(g *Global, use string, aliases []string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   "Show a machine's latest boot as a timeline of hops",
		Long: `Show a machine's latest boot session: one row per hop with its start (from the
session's start), service, duration, bytes and outcome. A hop that repeated
(iPXE retrying a script) shows once, as "script xN", with its last time.`,
		Example:           `  bootctl ` + strings.Fields(use)[0] + ` 52:54:00:12:34:56`,
		Args:              argNames("MAC"),
		ValidArgsFunction: firstArg(g, machineMACs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sessionClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: args[0]})
			if err != nil {
				return err
			}
			s := r.GetSession()
			return g.show(s, func(w io.Writer) error { return sessionTimeline(w, s) })
		},
	}
	return withFields(cmd, map[string]string{"mac": "MAC"})
}

func sessionTimeline(w io.Writer, s *bootapiv1.BootSession) error {
	fields := []field{
		{"Machine", s.GetMac()}, {"IP", dash(s.GetIp())}, {"Site", dash(s.GetSite())}, {"Job", dash(s.GetJobId())},
		{"Trace", dash(s.GetTraceId())}, {"State", sessionState(s.GetState())}, {"Started", ts(s.GetStartTime())},
	}
	if s.GetMessage() != "" {
		fields = append(fields, field{"Outcome", fmt.Sprintf("%s at hop %s: %s", sessionState(s.GetState()), dash(s.GetFailedHop()), s.GetMessage())})
	}
	if err := writeDetail(w, fields); err != nil {
		return err
	}
	fmt.Fprintln(w)
	start := s.GetStartTime().AsTime()
	rows := make([][]string, 0, len(s.GetHops()))
	for _, h := range s.GetHops() {
		outcome := "ok"
		if h.GetFailed() {
			outcome = "FAILED"
		}
		bytes := "-"
		if h.GetBytes() > 0 {
			bytes = humanBytes(h.GetBytes())
		}
		name := h.GetName()
		if n := h.GetRepeats(); n > 0 {
			// Folded repeats: the hop happened 1+n times, the last ending then.
			name = fmt.Sprintf("%s x%d", name, n+1)
			outcome += fmt.Sprintf(" (last +%s)", h.GetLastRepeatTime().AsTime().Sub(start).Round(time.Millisecond))
		}
		rows = append(rows, []string{
			"+" + h.GetStartTime().AsTime().Sub(start).Round(time.Millisecond).String(), name, h.GetService(),
			h.GetDuration().AsDuration().Round(time.Microsecond).String(), bytes, outcome, dash(h.GetDetail()),
		})
	}
	return writeTable(w, []string{"START", "HOP", "SERVICE", "DURATION", "BYTES", "OUTCOME", "DETAIL"}, rows)
}
