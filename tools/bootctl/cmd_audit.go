package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func auditCommand(g *Global) *cobra.Command {
	var since, until string
	var limit int32
	req := &bootapiv1.ListAuditEventsRequest{}
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log: who changed what, from where, when",
		Long: `Show the audit log, newest first: every write through a gRPC API, every call
refused for want of a credential or a permission, and every job dispatch and
installer callback. REVISION is the etcd revision the change committed at.
Events are kept for the retention period (--audit-retention, 30 days by
default). Reading the log needs the admin role.

--since and --until take a duration before now (90s, 1h, 7d) or a time
(2026-12-01, 2026-12-01T10:00:00Z). --identity and --action match any part
of the field; --resource matches it exactly.`,
		Example: `  bootctl audit --since 1h
  bootctl audit --identity token:ci-bot --action CreateJob
  bootctl audit --resource 52:54:00:12:34:56 -o json`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			if since != "" {
				t, err := parseWhen(since, now)
				if err != nil {
					return usageErrorf("--since: %v", err)
				}
				req.Since = timestamppb.New(t)
			}
			if until != "" {
				t, err := parseWhen(until, now)
				if err != nil {
					return usageErrorf("--until: %v", err)
				}
				req.Until = timestamppb.New(t)
			}
			if limit <= 0 {
				return usageErrorf("--limit: must be positive")
			}
			cc, err := g.Conn("bootapi")
			if err != nil {
				return err
			}
			c := bootapiv1.NewAuditServiceClient(cc)
			all := &bootapiv1.ListAuditEventsResponse{}
			// Page until the limit: a page may be short while more remain.
			for {
				req.PageSize = min(limit-int32(len(all.Events)), 1000)
				ctx, cancel := g.call(cmd.Context())
				r, err := c.ListAuditEvents(ctx, req)
				cancel()
				if err != nil {
					return err
				}
				all.Events = append(all.Events, r.GetEvents()...)
				all.NextPageToken = r.GetNextPageToken()
				if all.NextPageToken == "" || int32(len(all.Events)) >= limit {
					break
				}
				req.PageToken = all.NextPageToken
			}
			return g.show(all, func(w io.Writer) error { return auditTable(w, all.GetEvents()) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "only events since then: a duration before now (1h, 7d) or a time")
	f.StringVar(&until, "until", "", "only events before then: a duration before now or a time")
	f.StringVar(&req.Identity, "identity", "", "only events whose identity contains this (token:ci-bot, admin)")
	f.StringVar(&req.Action, "action", "", "only events whose action contains this (CreateJob, http.dispatch)")
	f.StringVar(&req.Resource, "resource", "", "only events on this resource (a name, MAC or id)")
	f.Int32Var(&limit, "limit", 100, "most events to show")
	return withFields(cmd, map[string]string{"since": "--since", "until": "--until", "page_size": "--limit"})
}

// parseWhen reads a point in time: a duration before now ("90s", "1h30m", "7d")
// or a date or RFC 3339 time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err == nil {
			return now.Add(-time.Duration(days) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration before now must not be negative", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want a duration before now (90s, 1h, 7d) or a time (2026-12-01, 2026-12-01T10:00:00Z)", s)
}

// auditTable has one row per event; ACTION drops a gRPC method's package.
func auditTable(w io.Writer, evs []*bootapiv1.AuditEvent) error {
	rows := make([][]string, 0, len(evs))
	for _, e := range evs {
		action := e.GetAction()
		if svc, m, ok := strings.Cut(strings.TrimPrefix(action, "/"), "/"); ok {
			action = svc[strings.LastIndex(svc, ".")+1:] + "/" + m
		}
		rev := "-"
		if e.GetRevision() > 0 {
			rev = strconv.FormatInt(e.GetRevision(), 10)
		}
		rows = append(rows, []string{
			ts(e.GetTime()), e.GetIdentity(), action, dash(e.GetResource()), dash(e.GetSite()),
			dash(e.GetPeer()), e.GetOutcome(), rev, dash(e.GetDetail()),
		})
	}
	return writeTable(w, []string{"TIME", "IDENTITY", "ACTION", "RESOURCE", "SITE", "PEER", "OUTCOME", "REVISION", "DETAIL"}, rows)
}
