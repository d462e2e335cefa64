package tftpd_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/tftpd"
	"github.com/bootchain/bootchain/services/tftpd/internal/tftptest"
	"github.com/pin/tftp/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// env is one tftpd under test with its etcd and artifact source.
type env struct {
	t     testing.TB
	st    *store.Store
	arts  *tftptest.Artifacts
	srv   *tftpd.Server
	cfg   tftpd.Config
	stop  func()
	admin tftpdv1.TftpServiceClient
}

type option func(*tftpd.Config)

// testLogger logs at Info and above into memory and prints it when the test fails
// (TFTPD_TEST_LOG=1: everything, Debug included, to stderr as it happens).
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TFTPD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("tftpd log:\n%s", buf.String())
			mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// newEnv starts tftpd against the test ArtifactService (tftptest), which can be
// stopped while artifacts change.
func newEnv(t testing.TB, opts ...option) *env {
	t.Helper()
	st := storetest.New(t)
	arts := tftptest.StartArtifacts(t, st)
	e := newEnvWith(t, st, arts.Addr(), opts...)
	e.arts = arts
	return e
}

func newEnvWith(t testing.TB, st *store.Store, artifactstore string, opts ...option) *env {
	t.Helper()
	e := &env{t: t, st: st}
	cfg := tftpd.DefaultConfig()
	cfg.Addr, cfg.GRPC.Addr, cfg.ArtifactStore = "127.0.0.1:0", "127.0.0.1:0", artifactstore
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir, cfg.Store, cfg.Logger = t.TempDir(), st, testLogger(t)
	cfg.Timeout, cfg.Retries = 200*time.Millisecond, 5
	cfg.Warm = false
	for _, o := range opts {
		o(&cfg)
	}
	e.cfg = cfg
	e.start()
	return e
}

func (e *env) start() {
	e.t.Helper()
	srv, err := tftpd.New(e.cfg)
	if err != nil {
		e.t.Fatalf("tftpd.New: %v", err)
	}
	e.stop = testkit.Run(e.t, "tftpd", srv.Run).Stop
	e.srv = srv
	cc, err := grpcclient.Dial(srv.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(e.t, e.st)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cc.Close() })
	e.admin = tftpdv1.NewTftpServiceClient(cc)
}

func (e *env) addr() string { return e.srv.Addr().String() }

func (e *env) stats() *tftpdv1.TransferStats {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.admin.GetTransferStats(ctx, &tftpdv1.GetTransferStatsRequest{})
	if err != nil {
		e.t.Fatalf("GetTransferStats: %v", err)
	}
	return resp.GetStats()
}

// get downloads file with pin/tftp's client.
func get(addr, file string, blksize int, tsize bool) ([]byte, int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(150 * time.Millisecond)
	c.SetRetries(10)
	c.SetBackoff(func(int) time.Duration { return 0 })
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(tsize)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		return nil, 0, err
	}
	// Size is the OACK's tsize, known before the data.
	size, _ := wt.(tftp.IncomingTransfer).Size()
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), size, nil
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func ipxeEFI(t testing.TB) []byte {
	b, err := os.ReadFile("/usr/lib/ipxe/ipxe.efi")
	if err != nil {
		// Not every machine has Debian's ipxe package: any binary-looking content
		// of a similar size does for transfer tests.
		return randomBytes(t, 1<<20+12345)
	}
	return b
}

func TestDownloadGoClient(t *testing.T) {
	e := newEnv(t, func(c *tftpd.Config) {
		c.Map = "custom.efi=ipxe.efi,pxelinux.cfg/*=pxe-"
	})
	efi := ipxeEFI(t)
	e.arts.Put("ipxe.efi", efi)
	kpxe := randomBytes(t, 70001)
	e.arts.Put("undionly.kpxe", kpxe)
	exact := randomBytes(t, 1024) // a multiple of every block size: ends with an empty block
	e.arts.Put("snponly.efi", exact)
	cfgFile := []byte("#!ipxe\nchain http://198.18.0.1/boot\n")
	e.arts.Put("pxe-01-52-54-00-12-34-56", cfgFile)
	e.arts.Put("empty-file", nil)
	if _, err := e.st.Put(context.Background(), store.Key("tftp", "default", "map"), &tftpdv1.FileMap{Entries: map[string]string{"empty.bin": "empty-file"}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		file    string
		blksize int
		tsize   bool
		want    []byte
	}{
		{name: "ipxe.efi 512", file: "ipxe.efi", want: efi},
		{name: "ipxe.efi 1468 tsize", file: "ipxe.efi", blksize: 1468, tsize: true, want: efi},
		{name: "blksize capped", file: "ipxe.efi", blksize: 65464, tsize: true, want: efi},
		{name: "undionly.kpxe", file: "undionly.kpxe", blksize: 1024, want: kpxe},
		{name: "exact multiple of the block", file: "snponly.efi", blksize: 512, want: exact},
		{name: "mapped by flag", file: "custom.efi", blksize: 1468, want: efi},
		{name: "prefix map", file: "pxelinux.cfg/01-52-54-00-12-34-56", want: cfgFile},
		{name: "etcd map, empty file", file: "empty.bin", tsize: true, want: []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			var size int64
			var err error
			// The etcd map arrives through a watch: allow it a moment.
			testkit.Eventually(t, "download of "+tt.file, func() bool {
				got, size, err = get(e.addr(), tt.file, tt.blksize, tt.tsize)
				return err == nil
			})
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got %d bytes, want %d (content differs)", len(got), len(tt.want))
			}
			if tt.tsize && size != int64(len(tt.want)) {
				t.Errorf("tsize = %d, want %d", size, len(tt.want))
			}
		})
	}
	// The server counts a transfer once it has the last ACK, a moment after the
	// client is done.
	testkit.Eventually(t, "transfers to end", func() bool { return e.stats().GetActive() == 0 })
	st := e.stats()
	if st.GetSucceeded() != int64(len(tests)) || st.GetFailed() != 0 {
		t.Errorf("stats: %v", st)
	}
}

// rawRequest sends pkt to addr from a fresh socket and returns the first answer
// (nil when none comes within wait).
func rawRequest(t testing.TB, addr string, pkt []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ua, _ := net.ResolveUDPAddr("udp", addr)
	if _, err := c.WriteToUDP(pkt, ua); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func rrq(op uint16, file, mode string, opts ...string) []byte {
	b := []byte{byte(op >> 8), byte(op)}
	b = append(append(b, file...), 0)
	b = append(append(b, mode...), 0)
	for _, o := range opts {
		b = append(append(b, o...), 0)
	}
	return b
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, func(c *tftpd.Config) { c.Map = "secret/*=x-" })
	e.arts.Put("ipxe.efi", []byte("ok"))
	tests := []struct {
		name     string
		pkt      []byte
		wantCode int // -1: no answer
	}{
		{name: "dot dot", pkt: rrq(1, "../etc/passwd", "octet"), wantCode: 2},
		{name: "dot dot inside", pkt: rrq(1, "secret/../../etc/passwd", "octet"), wantCode: 2},
		{name: "root slash: a name like any other", pkt: rrq(1, "/etc/passwd", "octet"), wantCode: 1},
		{name: "double slash", pkt: rrq(1, "//etc/passwd", "octet"), wantCode: 2},
		{name: "backslash", pkt: rrq(1, `..\windows\win.ini`, "octet"), wantCode: 2},
		{name: "control char", pkt: rrq(1, "ipxe\x01.efi", "octet"), wantCode: 2},
		{name: "unknown file", pkt: rrq(1, "no-such.efi", "octet"), wantCode: 1},
		{name: "mapped but missing", pkt: rrq(1, "secret/x", "octet"), wantCode: 1},
		{name: "write request", pkt: rrq(2, "ipxe.efi", "octet"), wantCode: 2},
		{name: "mail mode", pkt: rrq(1, "ipxe.efi", "mail"), wantCode: 4},
		{name: "bad mode", pkt: rrq(1, "ipxe.efi", "binary"), wantCode: 4},
		{name: "no terminator", pkt: []byte{0, 1, 'a', 0, 'o', 'c'}, wantCode: 4},
		{name: "option without value", pkt: rrq(1, "ipxe.efi", "octet", "blksize"), wantCode: 4},
		{name: "NUL in name", pkt: append(rrq(1, "ipxe", "octet")[:6], append([]byte{0}, rrq(1, ".efi", "octet")[2:]...)...), wantCode: 4},
		{name: "oversized", pkt: rrq(1, strings.Repeat("a", 600), "octet"), wantCode: 4},
		{name: "ack to request port", pkt: []byte{0, 4, 0, 1}, wantCode: -1},
		{name: "unknown opcode", pkt: []byte{0, 9, 1, 2, 3}, wantCode: -1},
		{name: "one byte", pkt: []byte{1}, wantCode: -1},
		{name: "empty", pkt: []byte{}, wantCode: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wait := 2 * time.Second
			if tt.wantCode < 0 {
				wait = 300 * time.Millisecond
			}
			ans := rawRequest(t, e.addr(), tt.pkt, wait)
			if tt.wantCode < 0 {
				if ans != nil {
					t.Fatalf("got an answer % x, want none", ans)
				}
				return
			}
			if len(ans) < 4 || ans[1] != 5 {
				t.Fatalf("got % x, want an ERROR packet", ans)
			}
			if code := int(ans[2])<<8 | int(ans[3]); code != tt.wantCode {
				t.Fatalf("error code %d (%q), want %d", code, ans[4:], tt.wantCode)
			}
		})
	}
	// The server still serves, and it counted what it refused and dropped.
	if got, _, err := get(e.addr(), "ipxe.efi", 0, false); err != nil || string(got) != "ok" {
		t.Fatalf("download after bad requests: %q, %v", got, err)
	}
	st := e.stats()
	if st.GetRefusedAccess() != 5 || st.GetRefusedWrites() != 1 || st.GetDropped() < 3 || st.GetNotFound() < 2 {
		t.Errorf("stats: %v", st)
	}
}

func TestTsizeProbeAbortAndSession(t *testing.T) {
	e := newEnv(t)
	efi := ipxeEFI(t)
	e.arts.Put("ipxe.efi", efi)
	// Another service (dhcpd) opened the machine's session with the client's IP.
	rec := e.srv.Sessions()
	if err := rec.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:12:34:56"
	sess := rec.Open(context.Background(), mac, sessionOpenIP("127.0.0.1"))

	// OVMF's size probe: RRQ with tsize, read the OACK, abort with error 8.
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDP(rrq(1, "ipxe.efi", "octet", "tsize", "0", "blksize", "1468", "windowsize", "4"), e.srv.Addr()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if buf[1] != 6 {
		t.Fatalf("want OACK, got % x", buf[:n])
	}
	oack := string(buf[2:n])
	if !strings.Contains(oack, fmt.Sprintf("tsize\x00%d\x00", len(efi))) || !strings.Contains(oack, "blksize\x001468\x00") || strings.Contains(oack, "windowsize") {
		t.Fatalf("OACK %q", oack)
	}
	abort := append([]byte{0, 5, 0, 8}, "User aborted\x00"...)
	if _, err := c.WriteToUDP(abort, from); err != nil {
		t.Fatal(err)
	}
	// Then the real transfer.
	got, _, err := get(e.addr(), "ipxe.efi", 1468, true)
	if err != nil || !bytes.Equal(got, efi) {
		t.Fatalf("transfer after the probe: %v", err)
	}
	testkit.Eventually(t, "two hops", func() bool {
		bs, ok := rec.Get(t.Context(), mac)
		return ok && len(bs.GetHops()) == 2
	})
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	bs, _ := rec.Get(t.Context(), mac)
	if bs.GetTraceId() != sess.TraceID() {
		t.Fatalf("hops went to another session")
	}
	probe, full := bs.GetHops()[0], bs.GetHops()[1]
	if probe.GetName() != "tftp" || !probe.GetFailed() || !strings.Contains(probe.GetDetail(), "aborted by client after the tsize probe") {
		t.Errorf("probe hop: %v", probe)
	}
	if probe.GetAttributes()["tftp.outcome"] != "aborted by client" || probe.GetAttributes()["tftp.windowsize_requested"] != "4" {
		t.Errorf("probe attributes: %v", probe.GetAttributes())
	}
	if full.GetFailed() || full.GetBytes() != int64(len(efi)) {
		t.Errorf("transfer hop: %v", full)
	}
	want := map[string]string{"tftp.file": "ipxe.efi", "tftp.blksize": "1468", "tftp.outcome": "succeeded", "tftp.tsize": fmt.Sprint(len(efi)), "tftp.bytes": fmt.Sprint(len(efi))}
	for k, v := range want {
		if full.GetAttributes()[k] != v {
			t.Errorf("attribute %s = %q, want %q (all: %v)", k, full.GetAttributes()[k], v, full.GetAttributes())
		}
	}
	if _, ok := full.GetAttributes()["tftp.retransmits"]; !ok {
		t.Errorf("no retransmits attribute")
	}
	testkit.Eventually(t, "transfers to end", func() bool { return e.stats().GetActive() == 0 })
	st := e.stats()
	if st.GetAborted() != 1 || st.GetSucceeded() != 1 {
		t.Errorf("stats: %v", st)
	}
}

// A client that stops acknowledging is recorded as failed (timed out).
func TestAbandonedTransfer(t *testing.T) {
	e := newEnv(t, func(c *tftpd.Config) { c.Retries = 2; c.Timeout = 100 * time.Millisecond })
	e.arts.Put("ipxe.efi", randomBytes(t, 5000))
	ans := rawRequest(t, e.addr(), rrq(1, "ipxe.efi", "octet"), 2*time.Second)
	if len(ans) < 4 || ans[1] != 3 {
		t.Fatalf("want DATA, got % x", ans)
	}
	testkit.Eventually(t, "the transfer to fail", func() bool { return e.stats().GetFailed() == 1 })
	if st := e.stats(); st.GetActive() != 0 || st.GetRetransmits() != 2 {
		t.Errorf("stats: %v", st)
	}
}

func TestSinglePort(t *testing.T) {
	e := newEnv(t, func(c *tftpd.Config) { c.SinglePort = true })
	efi := ipxeEFI(t)
	e.arts.Put("ipxe.efi", efi)
	for _, bs := range []int{512, 1468} {
		got, _, err := get(e.addr(), "ipxe.efi", bs, true)
		if err != nil || !bytes.Equal(got, efi) {
			t.Fatalf("blksize %d: %v", bs, err)
		}
	}
	// Answers come from the request port itself.
	ans := rawRequest(t, e.addr(), rrq(1, "ipxe.efi", "octet"), 2*time.Second)
	if len(ans) < 4 || ans[1] != 3 {
		t.Fatalf("want DATA, got % x", ans)
	}
}

func TestAdminCache(t *testing.T) {
	e := newEnv(t)
	e.arts.Put("ipxe.efi", []byte("v1"))
	if _, _, err := get(e.addr(), "ipxe.efi", 0, false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	list, err := e.admin.ListCacheEntries(ctx, &tftpdv1.ListCacheEntriesRequest{})
	if err != nil || len(list.GetEntries()) != 1 || list.GetEntries()[0].GetName() != "ipxe.efi" || !list.GetEntries()[0].GetVerified() {
		t.Fatalf("list: %v, %v", list, err)
	}
	if _, err := e.admin.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{Name: "ipxe.efi"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{Name: "ipxe.efi"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("second evict: %v", err)
	}
	if _, err := e.admin.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{}); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("evict without name: %v", err)
	}
	list, _ = e.admin.ListCacheEntries(ctx, &tftpdv1.ListCacheEntriesRequest{})
	if len(list.GetEntries()) != 0 {
		t.Fatalf("after evict: %v", list)
	}
	reads := e.arts.Reads("ipxe.efi")
	if _, _, err := get(e.addr(), "ipxe.efi", 0, false); err != nil {
		t.Fatal(err)
	}
	if e.arts.Reads("ipxe.efi") != reads+1 {
		t.Errorf("evicted entry was not fetched again")
	}
	testkit.Eventually(t, "transfers to end", func() bool { return e.stats().GetActive() == 0 })
	st := e.stats()
	if st.GetCacheMisses() != 2 || st.GetCacheHits() != 0 {
		t.Errorf("stats: %v", st)
	}
}

// dhcpd's lease names the machine at the client's address: the hop goes to that
// machine's session even when the session has no address recorded.
func TestHopFoundByLease(t *testing.T) {
	e := newEnv(t)
	e.arts.Put("snponly.efi", []byte("snp"))
	const mac = "52:54:00:aa:bb:cc"
	if _, err := e.st.Put(context.Background(), store.Key("leases", "default", "127.0.0.1"),
		&dhcpdv1.Lease{Ip: "127.0.0.1", Mac: mac, State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, Site: "default"}); err != nil {
		t.Fatal(err)
	}
	rec := e.srv.Sessions()
	if err := rec.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec.Open(context.Background(), mac, sessionOpenIP(""))
	// The lease reaches tftpd through a watch: retry until the hop lands.
	testkit.Eventually(t, "a tftp hop on the lease's session", func() bool {
		mustGet(t, e.addr(), "snponly.efi", []byte("snp"))
		testkit.Eventually(t, "transfers to end", func() bool { return e.stats().GetActive() == 0 })
		bs, ok := rec.Get(t.Context(), mac)
		return ok && len(bs.GetHops()) > 0
	})
	bs, _ := rec.Get(t.Context(), mac)
	if h := bs.GetHops()[0]; h.GetName() != "tftp" || h.GetService() != "tftpd" || h.GetFailed() || h.GetBytes() != 3 {
		t.Errorf("hop: %v", h)
	}
}

// The default listen address is the wildcard (":69"): IPv4 and IPv6 clients.
func TestWildcardListen(t *testing.T) {
	e := newEnv(t, func(c *tftpd.Config) { c.Addr = ":0" })
	e.arts.Put("ipxe.efi", []byte("dual"))
	port := e.srv.Addr().Port
	mustGet(t, fmt.Sprintf("127.0.0.1:%d", port), "ipxe.efi", []byte("dual"))
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err == nil {
		c.Close()
		mustGet(t, fmt.Sprintf("[::1]:%d", port), "ipxe.efi", []byte("dual"))
	}
}

// TestAdminSiteLimits: a caller limited to another site neither sees nor evicts
// this tftpd's cache; a viewer of this site sees it but cannot evict.
func TestAdminSiteLimits(t *testing.T) {
	e := newEnv(t)
	e.arts.Put("ipxe.efi", []byte("v1"))
	if _, _, err := get(e.addr(), "ipxe.efi", 0, false); err != nil {
		t.Fatal(err)
	}
	as := func(token string) tftpdv1.TftpServiceClient {
		cc, err := grpcclient.Dial(e.srv.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(token))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return tftpdv1.NewTftpServiceClient(cc)
	}
	ctx := context.Background()
	other := as(testkit.Token(t, e.st, auth.RoleAdmin, "elsewhere"))
	if list, err := other.ListCacheEntries(ctx, &tftpdv1.ListCacheEntriesRequest{}); err != nil || len(list.GetEntries()) != 0 {
		t.Errorf("other site's admin lists %v, %v; want nothing", list, err)
	}
	if _, err := other.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{Name: "ipxe.efi"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("other site's admin evicts: %v", err)
	}
	viewer := as(testkit.Token(t, e.st, auth.RoleViewer, "default"))
	if list, err := viewer.ListCacheEntries(ctx, &tftpdv1.ListCacheEntriesRequest{}); err != nil || len(list.GetEntries()) != 1 {
		t.Errorf("this site's viewer lists %v, %v", list, err)
	}
	if _, err := viewer.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{Name: "ipxe.efi"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("viewer evicts: %v", err)
	}
	if list, _ := e.admin.ListCacheEntries(ctx, &tftpdv1.ListCacheEntriesRequest{}); len(list.GetEntries()) != 1 {
		t.Fatalf("a refused evict evicted: %v", list)
	}
}
