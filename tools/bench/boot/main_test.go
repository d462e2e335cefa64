//go:build linux

package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/test/e2e"
	"github.com/google/go-cmp/cmp"
)

// TestPathsVM checks that every path sets up a VM that e2e.StartVM accepts: UEFI
// only options on UEFI firmware, and a path with a UEFI boot file on UEFI.
func TestPathsVM(t *testing.T) {
	seen := map[e2e.Firmware]bool{}
	flags := map[string]bool{}
	for _, p := range bootPaths {
		if seen[p.fw] || flags[p.flag] {
			t.Errorf("path %s: key or flag %q used twice", p.fw, p.flag)
		}
		seen[p.fw], flags[p.flag] = true, true
		var c e2e.VMConfig
		p.vm(&c)
		if (c.Firmware == e2e.UEFI) != (p.uefiFile || p.shimGrub) {
			t.Errorf("path %s: firmware %q, loads a UEFI boot file %v", p.fw, c.Firmware, p.uefiFile)
		}
		if c.HTTPBoot != p.uefiFileHTTP || c.SecureBoot != (p.siteSigned || p.shimGrub) {
			t.Errorf("path %s: VM HTTPBoot %v SecureBoot %v, path serves over HTTP %v, signs %v",
				p.fw, c.HTTPBoot, c.SecureBoot, p.uefiFileHTTP, p.siteSigned)
		}
	}
	if bootPaths[0].fw != e2e.BIOS {
		t.Errorf("first path %s: the / BIOS column needs BIOS first", bootPaths[0].fw)
	}
}

// TestPrintTable checks the medians and both ratios: against the first setup of
// the same firmware, and against the first firmware with the same setup.
func TestPrintTable(t *testing.T) {
	stock, bc := setups[0], setups[2]
	res := func(s Setup, fw e2e.Firmware, total, first float64, err error) result {
		return result{setup: s, firmware: fw, err: err,
			total: time.Duration(total * float64(time.Second)), firstDHCP: time.Duration(first * float64(time.Second))}
	}
	results := []result{
		res(stock, e2e.BIOS, 22, 2, nil),
		res(bc, e2e.BIOS, 12, 2, nil),
		res(bc, e2e.BIOS, 14, 2, nil),
		res(bc, e2e.BIOS, 13, 3, nil),
		res(stock, e2e.UEFI, 50, 10, nil),
		res(bc, e2e.UEFI, 22, 10, nil),
		res(bc, e2e.UEFI, 0, 0, errors.New("timeout")),
	}
	var b strings.Builder
	printTable(&b, []Setup{stock, bc}, []e2e.Firmware{e2e.BIOS, e2e.UEFI}, results)
	checkRows(t, b.String(), 3, map[string]string{
		"firmware setup boots": "firmware setup boots median s min s max s stock / this from 1st DHCP s stock / this this / bios",
		// BIOS bootchain: median 13 s; from the first DHCP 10, 12, 10 -> 10 s;
		// stock 22/13 = 1.69x, 20/10 = 2.00x; against itself 1.00x.
		"bios bootchain defaults": "bios bootchain defaults 3 13.00 12.00 14.00 1.69x 10.00 2.00x 1.00x",
		// UEFI bootchain: one boot of two (12 s after the first DHCP); stock 40 s
		// after it: 3.33x; against BIOS bootchain's 10 s: 1.20x.
		"uefi bootchain defaults": "uefi bootchain defaults 1 (1 failed) 22.00 22.00 22.00 2.27x 12.00 3.33x 1.20x",
		"uefi stock dnsmasq":      "uefi stock dnsmasq + nginx 1 50.00 50.00 50.00 1.00x 40.00 1.00x 2.00x",
	})
}

// TestStages splits a UEFI boot's capture (tcpdump -tt -n -v, trimmed) into its
// stages: the firmware's offer wait, its TFTP, iPXE's start, iPXE's fetches (the
// last new data from an artifact port, not its retransmission nor the FINs after
// it), the kernel's start and the installer's callbacks; IPv6 and ARP lines are
// skipped.
func TestStages(t *testing.T) {
	f, err := os.Open("testdata/uefi-capture.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pkts, err := parseCapture(f)
	if err != nil {
		t.Fatal(err)
	}
	ds, ok := stages(pkts)
	if !ok {
		t.Fatalf("stages missing in %d packets: %+v", len(pkts), pkts)
	}
	want := []time.Duration{4 * time.Second, 200 * time.Millisecond, 2300 * time.Millisecond,
		1500 * time.Millisecond, 6 * time.Second, 1500 * time.Millisecond}
	if !cmp.Equal(ds, want) {
		t.Errorf("stages %v, want %v", ds, want)
	}

	// BIOS: the first DHCP packet is iPXE's (the ROM), so the firmware's stages
	// are zero; without the kernel's DHCP, the stages are incomplete.
	var bios []capPacket
	for i, p := range pkts {
		if p.by == "ipxe" {
			bios = pkts[i:]
			break
		}
	}
	if len(bios) == 0 {
		t.Fatalf("no iPXE DHCP packet in %+v", pkts)
	}
	ds, ok = stages(bios)
	if !ok || ds[0] != 0 || ds[1] != 0 || ds[2] != 0 || ds[4] != 6*time.Second {
		t.Errorf("BIOS stages %v %v", ds, ok)
	}
	if _, ok := stages(bios[:len(bios)-3]); ok {
		t.Errorf("stages without the kernel's DHCP: ok")
	}
}

// FuzzParseCapture feeds tcpdump-like text (packet contents such as DHCP vendor
// classes appear in it) to the capture parser and the stages.
func FuzzParseCapture(f *testing.F) {
	b, err := os.ReadFile("testdata/uefi-capture.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Add("1796300211.000000 IP (tos 0x0)\n    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, length 99999999999999999999\n")
	f.Fuzz(func(t *testing.T, s string) {
		pkts, err := parseCapture(strings.NewReader(s))
		if err != nil {
			return
		}
		if ds, ok := stages(pkts); ok && len(ds) != len(stageNames) {
			t.Errorf("%d stages, want %d", len(ds), len(stageNames))
		}
	})
}

// TestPrintStages checks the stage medians per firmware and setup, and that boots
// without stages (failed, or no capture) are left out.
func TestPrintStages(t *testing.T) {
	bc := setups[2]
	sec := func(xs ...float64) []time.Duration {
		var ds []time.Duration
		for _, x := range xs {
			ds = append(ds, time.Duration(x*float64(time.Second)))
		}
		return ds
	}
	results := []result{
		{setup: bc, firmware: e2e.BIOS, stages: sec(0, 0, 0, 1, 20, 2)},
		{setup: bc, firmware: e2e.BIOS, stages: sec(0, 0, 0, 3, 30, 4)},
		{setup: bc, firmware: e2e.UEFI, stages: sec(4, 0.2, 2.5, 2, 40, 3)},
		{setup: bc, firmware: e2e.UEFI, stages: sec(9, 9, 9, 9, 9, 9), err: errors.New("failed")},
		{setup: bc, firmware: e2e.UEFI},
	}
	var b strings.Builder
	printStages(&b, []Setup{bc}, []e2e.Firmware{e2e.BIOS, e2e.UEFI}, results)
	checkRows(t, b.String(), 2, map[string]string{
		"median s":         "median s from the first DHCP packet (capture) bios bootchain (2) uefi bootchain (1)",
		"firmware offer":   "firmware offer wait (its DISCOVER -> REQUEST) 0.00 4.00",
		"firmware fetches": "firmware fetches the boot file (REQUEST -> last packet) 0.00 0.20",
		"iPXE: DHCP,":      "iPXE: DHCP, script, kernel and initrd sent 2.00 2.00",
		"kernel starts":    "kernel starts (sent -> the kernel's DHCP) 25.00 40.00",
	})
}

// checkRows checks the rows of a printed table, keyed by their first n words,
// with the columns' spacing collapsed.
func checkRows(t *testing.T, table string, n int, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= n {
			got[strings.Join(f[:n], " ")] = strings.Join(f, " ")
		}
	}
	for row, w := range want {
		if got[row] != w {
			t.Errorf("row %q:\n got %q\nwant %q\n%s", row, got[row], w, table)
		}
	}
}
