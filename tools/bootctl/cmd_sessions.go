package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

func sessionClient(g *Global) (bootapiv1.SessionServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewSessionServiceClient(cc), nil
}

func sessionState(s bootapiv1.SessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_"))
}

func runSessions(ctx context.Context, g *Global, args []string) error {
	c, err := sessionClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	r, err := c.ListSessions(ctx, &bootapiv1.ListSessionsRequest{})
	if err != nil {
		return err
	}
	if g.JSON() {
		return printJSON(g, r)
	}
	var rows [][]string
	for _, s := range r.GetSessions() {
		rows = append(rows, []string{s.GetMac(), dash(s.GetIp()), sessionState(s.GetState()), ts(s.GetStartTime()), ago(s.GetUpdateTime()), dash(s.GetFailedHop()), dash(s.GetJobId()), s.GetTraceId()})
	}
	return printTable(g, []string{"MAC", "IP", "STATE", "STARTED", "LAST ACTIVITY", "STOPPED AT", "JOB", "TRACE"}, rows)
}

// runTrace prints the machine's latest session: one row per hop with its offset
// from the session start, duration, bytes and outcome.
func runTrace(ctx context.Context, g *Global, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("trace MAC")
	}
	c, err := sessionClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	r, err := c.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: args[0]})
	if err != nil {
		return err
	}
	s := r.GetSession()
	if g.JSON() {
		return printJSON(g, s)
	}
	fmt.Fprintf(g.Out, "machine %s  ip %s  site %s  job %s\ntrace %s  state %s  started %s\n", s.GetMac(), dash(s.GetIp()), dash(s.GetSite()), dash(s.GetJobId()), s.GetTraceId(), sessionState(s.GetState()), ts(s.GetStartTime()))
	if s.GetMessage() != "" {
		fmt.Fprintf(g.Out, "%s at hop %s: %s\n", sessionState(s.GetState()), dash(s.GetFailedHop()), s.GetMessage())
	}
	fmt.Fprintln(g.Out)
	start := s.GetStartTime().AsTime()
	var rows [][]string
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
	return printTable(g, []string{"START", "HOP", "SERVICE", "DURATION", "BYTES", "OUTCOME", "DETAIL"}, rows)
}
