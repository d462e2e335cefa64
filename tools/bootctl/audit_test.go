package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
)

// TestAudit runs bootctl audit against a real bootapi and artifactstore: the
// writes bootctl made are listed newest first with the revisions etcd committed
// them at, and each filter selects.
func TestAudit(t *testing.T) {
	e := startEnv(t)
	e.mustRun("sites", "put", "lab", "--action", "local-disk")
	e.mustRun("machines", "register", "52:54:00:12:34:56", "--hostname", "node1", "--site", "lab")
	e.mustRun("machines", "list") // a read: not audited
	e.mustRun("sites", "update", "lab", "--action", "menu")

	var got struct {
		Events []struct {
			Action, Resource, Outcome, Identity string
			Revision                            string // int64 is a string in protojson
		}
	}
	out := e.mustRun("audit", "-o", "json")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []string{"/bootchain.bootapi.v1.SiteService/PutSite lab", "/bootchain.bootapi.v1.MachineService/RegisterMachine 52:54:00:12:34:56", "/bootchain.bootapi.v1.SiteService/UpdateSite lab"}
	if len(got.Events) != len(want) {
		t.Fatalf("got %d events, want %d:\n%s", len(got.Events), len(want), out)
	}
	siteRev, err := e.etcd.Client(t).Get(context.Background(), store.Key("sites", "lab"), &bootapiv1.Site{})
	if err != nil {
		t.Fatal(err)
	}
	table := scrub(e.mustRun("audit"))
	for i, ev := range got.Events {
		// Newest first.
		if w := want[len(want)-1-i]; ev.Action+" "+ev.Resource != w || ev.Outcome != "OK" {
			t.Errorf("event %d: %+v, want %s OK", i, ev, w)
		}
		table = regexp.MustCompile(`(\s)`+ev.Revision+`(\s)`).ReplaceAllString(table, "${1}REV"+strings.Repeat(" ", max(len(ev.Revision)-3, 0))+"${2}")
	}
	if got.Events[0].Revision != strconv.FormatInt(siteRev, 10) {
		t.Errorf("the site update's event at revision %s, the site at %d", got.Events[0].Revision, siteRev)
	}
	golden(t, "commands/audit", table)

	for _, tc := range []struct {
		args []string
		rows int
	}{
		{[]string{"--action", "PutSite"}, 1},
		{[]string{"--action", "UpdateSite"}, 1},
		{[]string{"--resource", "52:54:00:12:34:56"}, 1},
		{[]string{"--identity", "test-admin", "--since", "1h"}, 3},
		{[]string{"--identity", "anonymous"}, 0},
		{[]string{"--until", "1h"}, 0},
		{[]string{"--limit", "2"}, 2},
	} {
		out := e.mustRun(append([]string{"audit"}, tc.args...)...)
		if n := strings.Count(out, "\n") - 1; n != tc.rows {
			t.Errorf("audit %v: %d rows, want %d:\n%s", tc.args, n, tc.rows, out)
		}
	}
	if _, stderr, code := e.run("audit", "--since", "yesterday"); code == 0 || !strings.Contains(stderr, "--since") {
		t.Errorf("audit --since yesterday: exit %d, %s", code, stderr)
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"1h":                   now.Add(-time.Hour),
		"90s":                  now.Add(-90 * time.Second),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2026-12-01T10:00:00Z": time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseWhen(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1h", "yesterday", "1w", "99999999d"} {
		if got, err := parseWhen(in, now); err == nil {
			t.Errorf("parseWhen(%q) = %v, want an error", in, got)
		}
	}
}

// FuzzParseWhen: any input is either refused or read as a time no later than
// now when it is a duration.
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"1h", "7d", "2026-12-01", "2026-12-01T10:00:00Z", "-5m", "d", "0d"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseWhen(s, now)
		if err != nil {
			return
		}
		if _, derr := time.ParseDuration(strings.TrimSpace(s)); derr == nil && got.After(now) {
			t.Fatalf("parseWhen(%q) = %v, after now", s, got)
		}
	})
}
