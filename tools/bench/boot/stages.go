//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bootchain/bootchain/test/e2e"
)

// stageNames are the steps of a boot after the VM's first DHCP packet, as the
// capture on the bridge shows them (-pcap). On BIOS the NIC's ROM is iPXE, so the
// first three are zero.
var stageNames = []string{
	"firmware offer wait (its DISCOVER -> REQUEST)",
	"firmware fetches the boot file (REQUEST -> last packet)",
	"iPXE starts (boot file -> iPXE's DHCP)",
	"iPXE: DHCP, script, kernel and initrd sent",
	"kernel starts (sent -> the kernel's DHCP)",
	"installer (kernel's DHCP -> last callback packet)",
}

// capPacket is what the stages need of one captured IPv4 packet.
type capPacket struct {
	at time.Time
	// dhcp is the client's DHCP message type ("Discover", "Request") and by whom:
	// "firmware", "ipxe" (user class 77) or "kernel" (udhcp); empty otherwise.
	dhcp, by string
	// srcPort and dstPort are the UDP or TCP ports; payload the bytes after the
	// transport header.
	srcPort, dstPort int
	payload          int
	// seqEnd is the end of a TCP segment's sequence range (tcpdump's relative
	// numbers, per connection), to tell new data from retransmissions.
	seqEnd int64
}

var (
	stampRE   = regexp.MustCompile(`^(\d+)\.(\d{6}) IP `)
	addrRE    = regexp.MustCompile(`^\s*\d+\.\d+\.\d+\.\d+\.(\d+) > \d+\.\d+\.\d+\.\d+\.(\d+): (.*)`)
	lengthRE  = regexp.MustCompile(`length (\d+)`)
	dhcpMsgRE = regexp.MustCompile(`DHCP-Message \(53\), length 1: (\w+)`)
	seqRE     = regexp.MustCompile(`seq \d+:(\d+),`)
)

// parseCapture reads `tcpdump -tt -n -v` output: IPv4 packets only.
func parseCapture(r io.Reader) ([]capPacket, error) {
	var pkts []capPacket
	var cur *capPacket
	var text strings.Builder
	flush := func() {
		if cur == nil {
			return
		}
		t := text.String()
		if cur.dstPort == 67 {
			if m := dhcpMsgRE.FindStringSubmatch(t); m != nil {
				cur.dhcp, cur.by = m[1], "firmware"
				switch {
				case strings.Contains(t, "User-Class (77)"):
					cur.by = "ipxe"
				case strings.Contains(t, `"udhcp`):
					cur.by = "kernel"
				}
			}
		}
		pkts = append(pkts, *cur)
		cur = nil
		text.Reset()
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := stampRE.FindStringSubmatch(line); m != nil {
			flush()
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			us, _ := strconv.ParseInt(m[2], 10, 64)
			cur = &capPacket{at: time.Unix(sec, us*1000), srcPort: -1, dstPort: -1}
			continue
		}
		if cur == nil || (line != "" && line[0] != ' ' && line[0] != '\t') {
			flush() // an IPv6 or ARP packet's lines
			continue
		}
		text.WriteString(line + "\n")
		if cur.srcPort < 0 {
			if m := addrRE.FindStringSubmatch(line); m != nil {
				cur.srcPort, _ = strconv.Atoi(m[1])
				cur.dstPort, _ = strconv.Atoi(m[2])
				if ls := lengthRE.FindAllStringSubmatch(m[3], -1); len(ls) > 0 {
					// TCP: the last "length"; UDP and DHCP: the first, the UDP payload.
					i := len(ls) - 1
					if !strings.Contains(m[3], "Flags [") {
						i = 0
					}
					cur.payload, _ = strconv.Atoi(ls[i][1])
				}
				if sq := seqRE.FindStringSubmatch(m[3]); sq != nil {
					cur.seqEnd, _ = strconv.ParseInt(sq[1], 10, 64)
				}
			}
		}
	}
	flush()
	return pkts, sc.Err()
}

// artifactPorts serve the script, kernel and initrd: nginx, bootapi, artifactstore.
var artifactPorts = map[int]bool{80: true, 8080: true, 8081: true}

// stages splits a boot's capture into stageNames' durations, from the VM's first
// DHCP packet. ok is false when a step's packets are missing.
func stages(pkts []capPacket) (ds []time.Duration, ok bool) {
	first := -1
	find := func(from int, f func(p capPacket) bool) int {
		for i := max(from, 0); i < len(pkts); i++ {
			if f(pkts[i]) {
				return i
			}
		}
		return -1
	}
	first = find(0, func(p capPacket) bool { return p.dhcp != "" })
	ipxe := find(first, func(p capPacket) bool { return p.by == "ipxe" })
	kernel := find(ipxe, func(p capPacket) bool { return p.by == "kernel" })
	if first < 0 || ipxe < 0 || kernel < 0 {
		return nil, false
	}
	t0 := pkts[first].at
	fwRequest, fileDone := t0, t0
	if pkts[first].by == "firmware" {
		r := find(first, func(p capPacket) bool { return p.by == "firmware" && p.dhcp == "Request" })
		if r < 0 || r > ipxe {
			return nil, false
		}
		fwRequest, fileDone = pkts[r].at, pkts[r].at
		for i := r + 1; i < ipxe; i++ {
			if pkts[i].payload > 0 {
				fileDone = pkts[i].at // the boot file's last TFTP or HTTP packet
			}
		}
	}
	// The last new data the servers sent before the kernel's DHCP: not their
	// retransmissions of a tail that iPXE on EFI leaves unacknowledged while it
	// loads and starts the kernel (docs/firmware.md).
	fetched := pkts[ipxe].at
	sent := map[[2]int]int64{}
	for i := ipxe; i < kernel; i++ {
		p := pkts[i]
		if !artifactPorts[p.srcPort] || p.payload <= 0 {
			continue
		}
		if flow := [2]int{p.srcPort, p.dstPort}; p.seqEnd == 0 || p.seqEnd > sent[flow] {
			sent[flow] = max(sent[flow], p.seqEnd)
			fetched = p.at
		}
	}
	last := pkts[kernel].at
	for i := kernel; i < len(pkts); i++ {
		if pkts[i].payload > 0 && pkts[i].dstPort != 67 && pkts[i].srcPort != 67 {
			last = pkts[i].at
		}
	}
	marks := []time.Time{t0, fwRequest, fileDone, pkts[ipxe].at, fetched, pkts[kernel].at, last}
	for i := 1; i < len(marks); i++ {
		ds = append(ds, marks[i].Sub(marks[i-1]))
	}
	return ds, true
}

// captureStages reads the boot's capture file with tcpdump and returns its stages.
func captureStages(ctx context.Context, pcap string) ([]time.Duration, error) {
	out, err := exec.CommandContext(ctx, "tcpdump", "-r", pcap, "-tt", "-n", "-v").Output()
	if err != nil {
		return nil, fmt.Errorf("tcpdump -r %s: %w", pcap, err)
	}
	pkts, err := parseCapture(strings.NewReader(string(out)))
	if err != nil {
		return nil, err
	}
	ds, ok := stages(pkts)
	if !ok {
		return nil, fmt.Errorf("%s: a boot step's packets are missing", pcap)
	}
	return ds, nil
}

// printStages prints, for boots with a capture, the median of each stage per
// firmware and setup, side by side.
func printStages(w io.Writer, rows []Setup, firmwares []e2e.Firmware, results []result) {
	type col struct {
		name string
		ds   [][]time.Duration
	}
	var cols []col
	for _, fw := range firmwares {
		for _, s := range rows {
			c := col{name: string(fw) + " " + s.Key}
			for _, r := range results {
				if r.firmware == fw && r.setup.Key == s.Key && r.err == nil && len(r.stages) == len(stageNames) {
					c.ds = append(c.ds, r.stages)
				}
			}
			if len(c.ds) > 0 {
				cols = append(cols, c)
			}
		}
	}
	if len(cols) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "\nmedian s from the first DHCP packet (capture)")
	for _, c := range cols {
		fmt.Fprintf(tw, "\t%s (%d)", c.name, len(c.ds))
	}
	fmt.Fprintln(tw)
	for i, name := range stageNames {
		fmt.Fprint(tw, name)
		for _, c := range cols {
			var xs []float64
			for _, d := range c.ds {
				xs = append(xs, d[i].Seconds())
			}
			fmt.Fprintf(tw, "\t%.2f", median(xs))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
