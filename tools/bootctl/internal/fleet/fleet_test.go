package fleet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzParse feeds the parser arbitrary files: it must not panic, and what it
// accepts must survive Marshal and Parse unchanged (export | apply is a no-op).
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/apply/*.yaml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "---\n", "{}", `{"sites":[{"name":"a"}]}`, "machines:\n- mac: 52-54-00-00-00-01\n",
		"sites:\n- name: a\n  dhcp: {leaseTime: 1.5s}\n---\nprofiles: []\n", "profiles: [{name: a, labels: {k: v}}]",
		"- a\n- b\n", "sites: {}\n", "sites:\n- name: a\n  updateTime: 2024-01-01T00:00:00Z\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, err := Parse(b)
		if err != nil {
			return
		}
		out, err := Marshal(&Current{Profiles: want.Profiles, Sites: want.Sites, Machines: want.Machines}, false)
		if err != nil {
			t.Fatalf("Marshal of a parsed file: %v", err)
		}
		got, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse of Marshal's output: %v\n%s", err, out)
		}
		p := Diff(got, &Current{Profiles: want.Profiles, Sites: want.Sites, Machines: want.Machines}, true)
		if len(p.Ops) != 0 {
			t.Fatalf("round trip changed the fleet:\n%s\nfrom:\n%s\nto:\n%s", p.Render(), b, out)
		}
	})
}

// TestPruneOnlyListedKinds checks that --prune leaves alone the kinds a file
// has no list for, and discovered machines always.
func TestPruneOnlyListedKinds(t *testing.T) {
	f, err := Parse([]byte("machines: []\nsites:\n- name: lab\n"))
	if err != nil {
		t.Fatal(err)
	}
	cur := &Current{
		Profiles: []*bootapiv1.Profile{{Name: "p"}},
		Sites:    []*bootapiv1.Site{{Name: "lab"}, {Name: "old"}},
		Machines: []*bootapiv1.Machine{{Mac: "52:54:00:00:00:01"}, {Mac: "52:54:00:00:00:02", Discovered: true}},
	}
	got := Diff(f, cur, true).Render()
	want := "- machine 52:54:00:00:00:01\n- site old\n0 to create, 0 to change, 2 to delete, 1 unchanged\n"
	if got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	if got := Diff(f, cur, false).Render(); got != "0 to create, 0 to change, 0 to delete, 1 unchanged\n" {
		t.Errorf("without prune:\n%s", got)
	}
}

// TestNormalizeMatchesServer checks that server-set fields and MAC spelling
// do not count as changes.
func TestNormalizeMatchesServer(t *testing.T) {
	f, err := Parse([]byte("machines:\n- mac: 52-54-00-AB-CD-EF\n  hostname: node1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := f.Machines[0].GetMac(); m != "52:54:00:ab:cd:ef" {
		t.Errorf("mac %q", m)
	}
	srv := proto.Clone(f.Machines[0]).(*bootapiv1.Machine)
	srv.Discovered, srv.Facts = true, &bootapiv1.MachineFacts{Arch: "x86_64"}
	p := Diff(f, &Current{Machines: []*bootapiv1.Machine{srv}}, false)
	if len(p.Ops) != 0 || p.Unchanged != 1 {
		t.Errorf("server-set fields counted as changes:\n%s", p.Render())
	}
	if _, err := Parse([]byte(strings.Repeat(" ", MaxSize+1))); err == nil {
		t.Error("an oversized file parsed")
	}
}

// TestREADMEExample parses the fleet file tools/bootctl/README.md shows.
func TestREADMEExample(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README has no yaml block")
	}
	f, err := Parse([]byte(block))
	if err != nil {
		t.Fatalf("README's fleet file: %v", err)
	}
	if len(f.Profiles) != 1 || len(f.Sites) != 1 || len(f.Machines) != 1 || f.Sites[0].GetDhcp().GetSubnets()[0].GetPools()[0].GetEnd() != "10.0.0.199" {
		t.Errorf("README's fleet file parsed as %v", f)
	}
}
