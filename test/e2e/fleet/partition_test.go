//go:build linux

package fleet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/test/e2e"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// chainloadWindow is dhcpd's (services/dhcpd: Config.ChainloadWindow).
const chainloadWindow = 2 * time.Minute

// cutHops are the hops of a BIOS machine's boot while its site is cut off
// that reach etcd once it is back: its firmware's DHCP and iPXE's DHCP. (iPXE
// over TFTP comes between them, but tftpd finds a machine's session in etcd,
// and the cut boot's was never written there: tftpd records no hop of it;
// its metrics show the transfer.) Its next hop, the script, needs bootapi in
// the core.
var cutHops = []string{"dhcp.discover/dhcpd", "dhcp.request/dhcpd", "ipxe.dhcp/dhcpd"}

// TestSitePartition cuts one site off from the core (its WAN link down: no
// etcd, no bootapi, no origin) and boots a known BIOS machine there, which
// booted once before the cut (its lease is bound, the site's replica and tftpd
// hold its files). While cut: the machine gets its own address back from
// dhcpd's journal (firmware and iPXE), iPXE comes over TFTP from tftpd's cache,
// and the script, which only bootapi in the core serves, cannot be fetched, so
// the machine ends at its firmware's "No bootable device"; from the site's
// namespace the replica serves the cached kernel and initrd and answers 503
// "origin unreachable" for an artifact it never pulled; a job created in the
// core meanwhile stays pending. The link back: the journal is replayed into
// etcd (no conflict, no address bound twice, every ACK on the wire a lease in
// etcd, the renewal's expiry there), the hops of the cut boot are in the
// machine's session in etcd, and the pending job is dispatched on the next boot,
// which succeeds. It prints how long each phase took.
func TestSitePartition(t *testing.T) {
	rd := prereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	f := StartT(t, Config{Keep: os.Getenv("BOOTCHAIN_E2E_KEEP") != ""})
	s, err := f.AddSite(ctx, "site-a", SiteConfig{ChainloadOwnIPXE: true})
	if err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:bc:f2:0a"
	unpulled := writeTemp(t, "unpulled", bytes.Repeat([]byte("never pulled to the site\n"), 1000))
	for _, st := range [][]string{
		{"artifacts", "import-ipxe", "--dir", "/usr/lib/ipxe"},
		{"artifacts", "upload", rd.Kernel.Image, "--name", "e2e/vmlinuz"},
		{"artifacts", "upload", rd.Path, "--name", "e2e/initrd.gz"},
		{"artifacts", "upload", unpulled, "--name", "e2e/unpulled"},
		{"profiles", "create", "e2e", "-kernel", "e2e/vmlinuz", "-initrd", "e2e/initrd.gz",
			"-cmdline", "console=ttyS0 panic=1 hostname={{.Machine.Hostname}}"},
		{"machines", "register", mac, "--site", s.Name, "--hostname", "vm-partition"},
	} {
		if out, err := f.Bootctl(ctx, st...); err != nil {
			t.Fatalf("bootctl %s: %v: %s", strings.Join(st, " "), err, out)
		}
	}
	createJob := func() string {
		t.Helper()
		out, err := f.Bootctl(ctx, "-o", "json", "jobs", "create", "-mac", mac, "-profile", "e2e")
		if err != nil {
			t.Fatalf("jobs create: %v: %s", err, out)
		}
		id, err := e2e.ParseJobID(out)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	capt, err := s.CaptureDHCP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	api, err := f.GRPC(VIP.String() + ":9080")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	jobs := bootapiv1.NewJobServiceClient(api)
	sessions := bootapiv1.NewSessionServiceClient(api)
	hwaddr, _ := net.ParseMAC(mac)
	var vms []*e2e.VM
	powerOn := func() *e2e.VM {
		t.Helper()
		tap, err := s.AddTap(ctx)
		if err != nil {
			t.Fatal(err)
		}
		vm, err := e2e.StartVM(f.Lab, s.NS, e2e.VMConfig{Name: fmt.Sprintf("partition%d", len(vms)+1), Firmware: e2e.BIOS, MAC: hwaddr, Tap: tap})
		if err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm)
		t.Cleanup(func() { vm.Kill() })
		return vm
	}
	bootJob := func(what, job string) *e2e.VM {
		t.Helper()
		vm := powerOn()
		lost := func() error {
			if strings.Contains(vm.Serial(), "No bootable device") {
				return fmt.Errorf("the VM booted its default (local disk), not the job")
			}
			return nil
		}
		if err := waitJob(ctx, jobs, job, 8*time.Minute, lost); err != nil {
			r, _ := sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
			t.Fatalf("%s: %v\nsession: %v\nserial:\n%s", what, err, r.GetSession(), tail(vm.Serial(), 3000))
		}
		if _, err := vm.Wait(ctx); err != nil {
			t.Errorf("%s: VM after succeeded: %v", what, err)
		}
		return vm
	}
	metric := func(p *Proc, name string, labels ...string) float64 {
		t.Helper()
		m, err := p.Metrics(ctx)
		if err != nil {
			t.Fatalf("%s metrics: %v", p.Name, err)
		}
		return Sum(m, name, labels...)
	}
	var phases []string
	phase := func(what string, d time.Duration) {
		phases = append(phases, fmt.Sprintf("%-52s %v", what, d.Round(time.Millisecond)))
		t.Logf("phase: %s: %v", what, d.Round(time.Millisecond))
	}

	// 1. Online: the machine runs a job, so the site's replica pulls kernel,
	// initrd and iPXE through, tftpd caches iPXE and the lease is bound.
	vm1 := bootJob("boot before the cut", createJob())
	phase("boot before the cut: power-on -> succeeded", time.Since(vm1.Started))
	leases, err := f.Leases(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	ip := ""
	for a, l := range leases {
		if l.GetMac() == mac {
			ip = a
		}
	}
	if ip == "" {
		t.Fatalf("no lease of %s in etcd after the first boot: %v", mac, leases)
	}
	chainAt := leases[ip].GetChainloadTime().AsTime()
	if leases[ip].GetChainloadTime() == nil {
		t.Fatalf("the first boot's lease has no chain-load time: %v", leases[ip])
	}
	tftpOK := metric(s.TFTPD, "bootchain_tftpd_transfers_total", `outcome="succeeded"`)
	tftpHits := metric(s.TFTPD, "bootchain_tftpd_cache_lookups_total", `result="hit"`)

	// 2. The cut.
	if err := s.Cut(ctx); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	restored := false
	defer func() {
		if !restored {
			s.Restore(context.Background())
		}
	}()
	testkit.EventuallyWithin(t, 60*time.Second, "the site's dhcpd sees etcd unreachable", func() bool {
		return metric(s.DHCPD, "bootchain_dhcpd_etcd_reachable") == 0
	})
	phase("cut -> dhcpd serves cut off", time.Since(cut))
	site := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: s.NS.DialContext, DisableKeepAlives: true}}
	get := func(url string) (int, http.Header, []byte, error) {
		r, err := site.Get(url)
		if err != nil {
			return 0, nil, nil, err
		}
		defer r.Body.Close()
		b, err := io.ReadAll(r.Body)
		return r.StatusCode, r.Header, b, err
	}
	// The cut is real: nothing of the core answers the site.
	for _, u := range []string{"http://" + VIP.String() + ":8080/healthz", "http://" + OriginAddr.String() + ":8081/healthz"} {
		if code, _, _, err := get(u); err == nil {
			t.Fatalf("the cut site reaches %s: %d", u, code)
		}
	}
	// The core goes on: a job is created (etcd has its quorum there).
	job := createJob()
	// The site's replica serves what it cached; not what it never pulled.
	replica := "http://" + s.Addr.String() + ":8081/artifacts/"
	for name, path := range map[string]string{"e2e/vmlinuz": rd.Kernel.Image, "e2e/initrd.gz": rd.Path} {
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if code, _, b, err := get(replica + name); err != nil || code != http.StatusOK || !bytes.Equal(b, want) {
			t.Errorf("cached %s from the cut site's replica: %d, %d bytes (want %d), %v", name, code, len(b), len(want), err)
		}
	}
	if code, hdr, b, err := get(replica + "e2e/unpulled"); err != nil || code != http.StatusServiceUnavailable ||
		!strings.Contains(string(b), "origin unreachable") || hdr.Get("Retry-After") == "" {
		t.Errorf("unpulled artifact from the cut site's replica: %d, Retry-After %q, %q, %v; want 503 origin unreachable", code, hdr.Get("Retry-After"), b, err)
	}

	// 3. The machine boots while cut. dhcpd takes an iPXE request within
	// ChainloadWindow (2 min) of its chain-load answer for the chain-loaded
	// iPXE and answers with the script: the reboot waits that out, so that the
	// NIC's iPXE ROM is given iPXE over TFTP again, from tftpd's cache.
	if d := time.Until(chainAt.Add(chainloadWindow + 5*time.Second)); d > 0 {
		t.Logf("the site stays cut off %v more: dhcpd's chain-load window", d.Round(time.Second))
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(d):
		}
	}
	vm2 := powerOn()
	wctx, wcancel := context.WithTimeout(ctx, 6*time.Minute)
	end, err := vm2.WaitSerial(wctx, "No bootable device")
	wcancel()
	if err != nil {
		t.Fatalf("boot while cut: %v\nserial:\n%s", err, tail(vm2.Serial(), 3000))
	}
	vm2.Kill()
	phase("boot while cut: power-on -> script unreachable", end.Sub(vm2.Started))
	// (ACKs stops the capture: a new one records from here on.)
	var cutACKs []ACK
	acks, err := capt.ACKs()
	if err != nil {
		t.Fatal(err)
	}
	if capt, err = s.CaptureDHCP(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range acks {
		if a.MAC == mac && a.Time.After(vm2.Started) {
			cutACKs = append(cutACKs, a)
			if a.IP != ip {
				t.Errorf("cut off, %s was ACKed %s; its lease is %s", mac, a.IP, ip)
			}
		}
	}
	// The firmware's and iPXE's DHCP.
	if len(cutACKs) < 2 {
		t.Fatalf("cut off, %d ACKs to %s on the wire, want the firmware's and iPXE's (all ACKs: %v)\nserial:\n%s", len(cutACKs), mac, acks, tail(vm2.Serial(), 3000))
	}
	renewals := metric(s.DHCPD, "bootchain_dhcpd_offline_renewals_total")
	if j := metric(s.DHCPD, "bootchain_dhcpd_offline_journal_records"); renewals < float64(len(cutACKs)) || j < 1 {
		t.Errorf("dhcpd: %v offline renewals, %v journal records; want at least %d and 1", renewals, j, len(cutACKs))
	}
	if v := metric(s.TFTPD, "bootchain_tftpd_transfers_total", `outcome="succeeded"`) - tftpOK; v < 1 {
		t.Errorf("tftpd: %v transfers succeeded while cut, want iPXE's", v)
	}
	if v := metric(s.TFTPD, "bootchain_tftpd_cache_lookups_total", `result="hit"`) - tftpHits; v < 1 {
		t.Errorf("tftpd: %v cache hits while cut, want iPXE's", v)
	}
	if !strings.Contains(vm2.Serial(), "iPXE") {
		t.Errorf("no iPXE on the cut boot's console:\n%s", tail(vm2.Serial(), 2000))
	}
	r, err := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: job})
	if err != nil || r.GetJob().GetState() != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Errorf("job created during the cut: %v, %v; want pending", r.GetJob().GetState(), err)
	}

	// 4. The link back: the journal is replayed, the kept hops are written.
	if err := s.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	restored = true
	back := time.Now()
	phase("cut lasted", back.Sub(cut))
	testkit.EventuallyWithin(t, 3*time.Minute, "dhcpd's journal replayed into etcd", func() bool {
		return metric(s.DHCPD, "bootchain_dhcpd_etcd_reachable") == 1 && metric(s.DHCPD, "bootchain_dhcpd_offline_journal_records") == 0
	})
	phase("restore -> journal replayed", time.Since(back))
	written := metric(s.DHCPD, "bootchain_dhcpd_offline_replays_total", `outcome="written"`)
	current := metric(s.DHCPD, "bootchain_dhcpd_offline_replays_total", `outcome="current"`)
	conflicts := metric(s.DHCPD, "bootchain_dhcpd_offline_replays_total", `outcome="conflict"`)
	if written < 1 || conflicts != 0 || written+current != renewals {
		t.Errorf("replays: %v written, %v current, %v conflicts of %v renewals; want at least 1 written, no conflict, all settled", written, current, conflicts, renewals)
	}
	leases, err = f.Leases(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	checkLeases(t, s.Name, acks, leases)
	last := cutACKs[len(cutACKs)-1]
	if l := leases[ip]; l.GetMac() != mac || l.GetExpireTime().AsTime().Before(last.Time.Add(last.Lease-5*time.Second)) {
		t.Errorf("etcd holds %v at %s; want %s's renewal until about %v", l, ip, mac, last.Time.Add(last.Lease))
	}
	// The cut boot's hops, kept by dhcpd's and tftpd's session recorders, are
	// written once etcd answers. (The cut boot's session record, a change that
	// failed, is not kept, so its hops need not share one trace: tftpd, which
	// learns sessions from etcd, files its hop under the session it knows.)
	var cutHopsAt []string
	var missing string
	if !testkit.Poll(60*time.Second, func() bool {
		traces, err := hopsByTrace(ctx, f, mac)
		if err != nil {
			return false
		}
		var all []*bootapiv1.Hop
		where := map[*bootapiv1.Hop]string{}
		for tid, hops := range traces {
			for _, h := range hops {
				all = append(all, h)
				where[h] = tid
			}
		}
		sort.Slice(all, func(i, j int) bool { return all[i].GetStartTime().AsTime().Before(all[j].GetStartTime().AsTime()) })
		cutHopsAt = cutHopsAt[:0]
		for _, h := range all {
			if at := h.GetStartTime().AsTime(); !at.Before(vm2.Started) && !at.After(back) {
				cutHopsAt = append(cutHopsAt, fmt.Sprintf("%s/%s@%.8s", h.GetName(), h.GetService(), where[h]))
			}
		}
		missing = missingCutHop(all, vm2.Started, back)
		return missing == ""
	}) {
		traces, err := hopsByTrace(ctx, f, mac)
		n := map[string]int{}
		for tid, hops := range traces {
			n[tid] = len(hops)
		}
		t.Fatalf("the cut boot's hops in etcd lack %s within 60 s of the restore; hops within the cut (name/service@trace): %v; hops by trace: %v, %v", missing, cutHopsAt, n, err)
	}
	phase("restore -> hops of the cut boot in etcd", time.Since(back))
	t.Logf("hops of the cut boot in etcd (name/service@trace): %v", cutHopsAt)

	// 5. The next boot gets the job created during the cut.
	vm3 := bootJob("boot after the cut", job)
	phase("boot after the cut: power-on -> succeeded (the job)", time.Since(vm3.Started))
	r, err = jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: job})
	if err != nil || r.GetJob().GetState() != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("job created during the cut: %v, %v; want succeeded", r.GetJob().GetState(), err)
	}
	later, err := capt.ACKs()
	if err != nil {
		t.Fatal(err)
	}
	acks = append(acks, later...)
	if leases, err = f.Leases(ctx, s.Name); err != nil {
		t.Fatal(err)
	}
	checkLeases(t, s.Name, acks, leases)
	t.Logf("partition figures (%d ACKs on the wire, %d while cut, %v renewals journaled, %v written, %v current):\n  %s",
		len(acks), len(cutACKs), renewals, written, current, strings.Join(phases, "\n  "))
}

// hopsByTrace reads mac's hops from etcd, by trace, each trace's in order.
func hopsByTrace(ctx context.Context, f *Fleet, mac string) (map[string][]*bootapiv1.Hop, error) {
	prefix := store.Prefix("sessionhops", mac)
	r, err := f.EtcdClient().Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	out := map[string][]*bootapiv1.Hop{}
	for _, kv := range r.Kvs {
		tid, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix), "/")
		h := &bootapiv1.Hop{}
		if err := proto.Unmarshal(kv.Value, h); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out[tid] = append(out[tid], h)
	}
	return out, nil
}

// missingCutHop returns the first of cutHops that hops lack (in order, each
// started within [from, to]), or "".
func missingCutHop(hops []*bootapiv1.Hop, from, to time.Time) string {
	i := 0
	for _, h := range hops {
		if i == len(cutHops) {
			break
		}
		at := h.GetStartTime().AsTime()
		if h.GetName()+"/"+h.GetService() == cutHops[i] && !at.Before(from) && !at.After(to) {
			i++
		}
	}
	if i < len(cutHops) {
		return cutHops[i]
	}
	return ""
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
