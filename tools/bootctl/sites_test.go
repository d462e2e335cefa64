package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TestSitesUpdateKeepsFields: the trap of issue 17. A site written whole from a
// file with pools, routers, DNS and boot files; then each kind of update changes
// its field and nothing else, and put still replaces the whole record.
func TestSitesUpdateKeepsFields(t *testing.T) {
	e := startEnv(t)
	file := filepath.Join(t.TempDir(), "lab.yaml")
	if err := os.WriteFile(file, []byte(`name: lab
defaultAction: ACTION_MENU
bootapiUrl: http://198.18.0.5:8080
artifactUrl: http://198.18.0.5:8081
tftpServer: 198.18.0.5
dhcp:
  mode: DHCP_MODE_AUTHORITATIVE
  subnets:
  - cidr: 198.18.0.0/24
    pools: [{start: 198.18.0.100, end: 198.18.0.199}]
    routers: [198.18.0.1]
    dnsServers: [198.18.0.2]
  - cidr: 198.18.1.0/24
    pools: [{start: 198.18.1.100, end: 198.18.1.199}]
  bootFiles: {uefi-x64: snponly.efi}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustRun("sites", "put", "lab", "-f", file)
	get := func() *bootapiv1.Site {
		t.Helper()
		s := &bootapiv1.Site{}
		if err := protojson.Unmarshal([]byte(e.mustRun("sites", "get", "lab", "-o", "json")), s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	want := get()
	// Each update's own output (-o json) is the site as stored: few calls, so
	// the test stays within the authenticator's bound on reads of tokens its
	// cache does not hold yet (the token is a moment old).
	update := func(args ...string) *bootapiv1.Site {
		t.Helper()
		s := &bootapiv1.Site{}
		out := e.mustRun(append(append([]string{"sites", "update", "lab"}, args...), "-o", "json")...)
		if err := protojson.Unmarshal([]byte(out), s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var got *bootapiv1.Site
	check := func(what string, change func(*bootapiv1.Site)) {
		t.Helper()
		change(want)
		if got.GetRevision() <= want.GetRevision() {
			t.Errorf("%s: revision %d did not move past %d", what, got.GetRevision(), want.GetRevision())
		}
		want.Revision, want.UpdateTime = got.Revision, got.UpdateTime
		if !proto.Equal(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", what, got, want)
		}
	}

	got = update("--extra-cmdline", "console=ttyS0")
	check("--extra-cmdline", func(s *bootapiv1.Site) { s.ExtraCmdline = "console=ttyS0" })
	got = update("--callback-url", "https://boot.example.net")
	check("--callback-url", func(s *bootapiv1.Site) { s.CallbackUrl = "https://boot.example.net" })
	got = update("--subnet", "198.18.0.0/24", "--router", "198.18.0.254", "--dns", "198.18.0.3", "--dns", "198.18.0.4")
	check("--router --dns", func(s *bootapiv1.Site) {
		s.Dhcp.Subnets[0].Routers, s.Dhcp.Subnets[0].DnsServers = []string{"198.18.0.254"}, []string{"198.18.0.3", "198.18.0.4"}
	})
	got = update("--subnet", "198.18.1.0/24", "--pool", "198.18.1.10-198.18.1.20")
	check("--pool", func(s *bootapiv1.Site) {
		s.Dhcp.Subnets[1].Pools = []*bootapiv1.DhcpPool{{Start: "198.18.1.10", End: "198.18.1.20"}}
	})
	got = update("--subnet", "198.18.2.0/24", "--pool", "198.18.2.10-198.18.2.20")
	check("new --subnet", func(s *bootapiv1.Site) {
		s.Dhcp.Subnets = append(s.Dhcp.Subnets, &bootapiv1.DhcpSubnet{Cidr: "198.18.2.0/24", Pools: []*bootapiv1.DhcpPool{{Start: "198.18.2.10", End: "198.18.2.20"}}})
	})
	got = update("--boot-file", "bios=undionly.kpxe", "--boot-file", "uefi-x64=")
	check("--boot-file", func(s *bootapiv1.Site) { s.Dhcp.BootFiles = map[string]string{"bios": "undionly.kpxe"} })

	// A stale --revision changes nothing.
	stale := strconv.FormatInt(want.GetRevision()-1, 10)
	for _, args := range [][]string{
		{"sites", "update", "lab", "--tftp", "198.18.0.9", "--revision", stale},
		{"sites", "update", "lab", "--subnet", "198.18.0.0/24", "--router", "198.18.0.9", "--revision", stale},
	} {
		if _, stderr, code := e.run(args...); code == 0 || !strings.Contains(stderr, "revision") {
			t.Errorf("bootctl %q: exit %d, %q; want a refusal naming the revision", args, code, stderr)
		}
	}
	// Nothing was written: the site is still at the revision read.
	got = update("--tftp", "198.18.0.9", "--revision", strconv.FormatInt(want.GetRevision(), 10))
	check("--tftp at the current --revision", func(s *bootapiv1.Site) { s.TftpServer = "198.18.0.9" })

	if _, stderr, code := e.run("sites", "update", "lab", "--pool", "198.18.0.10-198.18.0.20"); code == 0 || !strings.Contains(stderr, "--subnet") {
		t.Errorf("--pool without --subnet: exit %d, %q", code, stderr)
	}

	if s := get(); !proto.Equal(s, want) {
		t.Errorf("stored:\n got %v\nwant %v", s, want)
	}

	// put is the whole-record replace it says it is.
	put := &bootapiv1.Site{}
	if err := protojson.Unmarshal([]byte(e.mustRun("sites", "put", "lab", "--action", "local-disk", "-o", "json")), put); err != nil {
		t.Fatal(err)
	}
	if put.GetDhcp() != nil || put.GetBootapiUrl() != "" || put.GetExtraCmdline() != "" {
		t.Errorf("put kept fields it was not given: %v", put)
	}
}
