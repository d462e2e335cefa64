package integration

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/bootapi"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/services/tftpd"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// cutFor is how long the site stays cut off.
const cutFor = 20 * time.Second

var bootToken = regexp.MustCompile(`bootchain\.token=([A-Za-z0-9_-]+)`)

// TestSiteKeepsBootingWithoutQuorum: a site's dhcpd, bootapi and
// artifactstore replica on a 3-member etcd cluster (Debian's etcd, separate
// processes). Two members are killed: etcd has no quorum, and the origin is
// gone too (the WAN link). A real DHCP client renews its bound lease, the
// known machine fetches its default script (its pending job withheld), its
// installer's report gets 503 with Retry-After, a cached artifact downloads
// and one not yet pulled answers 503 "origin unreachable", a cached boot file
// comes over TFTP. Quorum back: the
// renewal is replayed into etcd (no address twice), and the pending job is
// dispatched within 30 s.
func TestSiteKeepsBootingWithoutQuorum(t *testing.T) {
	cl := startEtcdCluster(t, 3)
	l := lab.NewT(t, lab.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	open := func() *store.Store {
		st, err := store.Open(ctx, store.Config{Endpoints: cl.Endpoints(), RequestTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	st := open()
	admin := grpcclient.WithToken(testkit.AdminToken(t, st))

	// The core: the origin artifactstore (the test's own namespace).
	ocfg := artifactstore.DefaultConfig()
	ocfg.Store, ocfg.Site, ocfg.HTTPAddr, ocfg.DataDir, ocfg.Logger = open(), "core", "127.0.0.1:0", t.TempDir(), discard()
	ocfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	origin, err := artifactstore.New(ocfg)
	if err != nil {
		t.Fatal(err)
	}
	originSvc := testkit.Run(t, "origin artifactstore", origin.Run)
	testkit.WaitHTTP(t, "http://"+origin.HTTPAddr().String()+"/healthz")
	occ, err := grpcclient.Dial(origin.GRPCAddr().String(), tlsconf.Files{}, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer occ.Close()
	kernel, initrd, ipxe := randomBytes(t, 200000), randomBytes(t, 50000), randomBytes(t, 300000)
	for name, data := range map[string][]byte{"vmlinuz": kernel, "initrd.gz": initrd, "ipxe.efi": ipxe} {
		stream, err := artifactstorev1.NewArtifactServiceClient(occ).Upload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Header{Header: &artifactstorev1.UploadHeader{Name: name}}})
		stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Chunk{Chunk: data}})
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
	}

	// The site, on the lab's boot network (198.18.0.1/24): the replica,
	// bootapi and dhcpd serve machines there.
	rlis, err := l.Main().Listen("tcp", "198.18.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcfg := artifactstore.DefaultConfig()
	rcfg.Store, rcfg.Site, rcfg.HTTPListener, rcfg.DataDir, rcfg.Logger = open(), "lab", rlis, t.TempDir(), discard()
	rcfg.Origin, rcfg.OriginToken = origin.GRPCAddr().String(), testkit.Token(t, st, auth.RoleService)
	rcfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	replica, err := artifactstore.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "replica artifactstore", replica.Run)
	replicaURL := "http://" + rlis.Addr().String()

	tcfg := tftpd.DefaultConfig()
	tcfg.Addr, tcfg.GRPC.Addr, tcfg.HTTPAddr, tcfg.ArtifactStore = "127.0.0.1:0", "127.0.0.1:0", "-", replica.GRPCAddr().String()
	tcfg.DataDir, tcfg.Store, tcfg.Logger, tcfg.Site = t.TempDir(), open(), discard(), "lab"
	tcfg.ArtifactStoreToken = testkit.Token(t, st, auth.RoleService)
	tcfg.Warm = false
	tsrv, err := tftpd.New(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "tftpd", tsrv.Run)
	tftpAddr := tsrv.Addr().String()

	var bsrv *bootapi.Server
	bcfg := bootapi.DefaultConfig()
	bcfg.Store, bcfg.Site, bcfg.HTTPAddr, bcfg.Logger, bcfg.ArtifactURL = open(), "lab", "198.18.0.1:0", discard(), replicaURL
	bcfg.ReachInterval = 200 * time.Millisecond
	bcfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	if err := l.Main().Do(func() (err error) { bsrv, err = bootapi.New(bcfg); return err }); err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "bootapi", bsrv.Run)
	bootapiURL := "http://" + bsrv.HTTPAddr().String()
	// bootapi's gRPC listener is on the lab namespace's loopback.
	bcc, err := grpcclient.Dial(bsrv.GRPCAddr().String(), tlsconf.Files{}, admin,
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return l.Main().DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	defer bcc.Close()

	// The machine: a namespace on the boot network at its reserved address.
	const machineIP = "198.18.0.150"
	ns, err := l.AddNetns(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddVeth(ctx, lab.Endpoint{NS: ns, Name: "eth0", Addr: netip.MustParsePrefix(machineIP + "/24")},
		lab.Endpoint{NS: l.Main(), Name: "vm1", Master: l.Bridge()}); err != nil {
		t.Fatal(err)
	}
	var dc *nclient4.Client
	if err := ns.Do(func() (err error) {
		dc, err = nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	mac := dc.InterfaceAddr().String()
	web := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	httpGet := func(u string) (int, http.Header, []byte) {
		t.Helper()
		resp, err := web.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	script := func() string {
		t.Helper()
		code, _, b := httpGet(bootapiURL + "/ipxe/v1/config?mac=" + url.QueryEscape(mac))
		if code != 200 {
			t.Fatalf("script: %d %s", code, b)
		}
		return string(b)
	}
	report := func(job, token string) (int, http.Header) {
		t.Helper()
		resp, err := web.PostForm(bootapiURL+"/ipxe/v1/report?job="+job, url.Values{"token": {token}, "state": {"running"}})
		if err != nil {
			t.Fatalf("report: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}

	ref := func(s string) *bootapiv1.ArtifactRef {
		return &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: s}}
	}
	if _, err := bootapiv1.NewProfileServiceClient(bcc).CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
		Name: "install", Kernel: ref("vmlinuz"), Initrds: []*bootapiv1.ArtifactRef{ref("initrd.gz")}, Cmdline: "console=ttyS0"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bootapiv1.NewMachineServiceClient(bcc).RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{
		Mac: mac, Site: "lab", Ipv4Address: machineIP, DefaultAction: bootapiv1.Action_ACTION_LOCAL_DISK}}); err != nil {
		t.Fatal(err)
	}
	// dhcpd starts with the machine record (its reserved address) loaded.
	var dsrv *dhcpd.Server
	dcfg := dhcpd.DefaultConfig()
	dcfg.Store, dcfg.Site, dcfg.Interface, dcfg.Name, dcfg.Logger = open(), "lab", l.Bridge(), "dhcpd-lab", discard()
	dcfg.GRPC.Addr, dcfg.HTTPAddr, dcfg.Advertise = "127.0.0.1:0", "127.0.0.1:0", "198.18.0.1"
	dcfg.DataDir, dcfg.ReachInterval = t.TempDir(), 200*time.Millisecond
	dcfg.Seed = &bootapiv1.SiteDhcp{
		Mode: bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE, LeaseTime: durationpb.New(time.Hour),
		Subnets: []*bootapiv1.DhcpSubnet{{Cidr: "198.18.0.0/24", Routers: []string{"198.18.0.1"},
			Pools: []*bootapiv1.DhcpPool{{Start: "198.18.0.100", End: "198.18.0.199"}}}},
	}
	if err := l.Main().Do(func() (err error) { dsrv, err = dhcpd.New(dcfg); return err }); err != nil {
		t.Fatal(err)
	}
	dsvc := testkit.Run(t, "dhcpd", dsrv.Run)
	testkit.WaitClosed(t, dsvc, "dhcpd ready", dsrv.Ready())

	var bound *nclient4.Lease
	if bound, err = dc.Request(ctx); err != nil || bound.ACK.YourIPAddr.String() != machineIP {
		t.Fatalf("the machine's DHCP lease: %v, %v; want %s", bound, err, machineIP)
	}
	jr, err := bootapiv1.NewJobServiceClient(bcc).CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "install"})
	if err != nil {
		t.Fatal(err)
	}
	job := jr.GetJob().GetId()
	// The boot file reaches tftpd's cache before the cut.
	testkit.EventuallyWithin(t, 60*time.Second, "ipxe.efi over TFTP", func() bool {
		got, err := get(tftpAddr, "ipxe.efi", 1468)
		return err == nil && bytes.Equal(got, ipxe)
	})
	// The kernel is pulled through to the site before the cut; the initrd is not.
	if code, _, b := httpGet(replicaURL + "/artifacts/vmlinuz"); code != 200 || !bytes.Equal(b, kernel) {
		t.Fatalf("kernel through the replica: %d, %d bytes", code, len(b))
	}

	// The cut: etcd loses quorum, the core's origin is gone.
	cl.stop(cl.members[1])
	cl.stop(cl.members[2])
	originSvc.Stop()
	cut := time.Now()
	testkit.EventuallyWithin(t, time.Minute, "dhcpd and bootapi see etcd unreachable", func() bool { return dsrv.Offline() && bsrv.Offline() })
	t.Logf("cut off after %s", time.Since(cut).Round(time.Millisecond))

	// The bound lease renews (INIT-REBOOT: a broadcast answer).
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(dc.InterfaceAddr()), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(bound.ACK.YourIPAddr)), dhcpv4.WithBroadcast(true))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := dc.SendAndRead(ctx, nclient4.DefaultServers, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck))
	if err != nil || ack.YourIPAddr.String() != machineIP {
		t.Fatalf("renewal without quorum: %v, %v", ack, err)
	}
	renewedUntil := time.Now().Add(ack.IPAddressLeaseTime(0))
	// The known machine boots its default; its pending job is withheld.
	if s := script(); bootToken.MatchString(s) || !strings.Contains(s, "exit") {
		t.Errorf("script without quorum: want the default (local disk), not the job:\n%s", s)
	}
	// An installer's report cannot be recorded: 503, retry.
	if code, hdr := report(job, "any"); code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("report without quorum: %d, Retry-After %q; want 503 with Retry-After", code, hdr.Get("Retry-After"))
	}
	// The cached kernel downloads; the initrd, never pulled, cannot be.
	if code, _, b := httpGet(replicaURL + "/artifacts/vmlinuz"); code != 200 || !bytes.Equal(b, kernel) {
		t.Errorf("cached kernel cut off: %d, %d bytes", code, len(b))
	}
	if code, hdr, b := httpGet(replicaURL + "/artifacts/initrd.gz"); code != http.StatusServiceUnavailable ||
		!strings.Contains(string(b), "origin unreachable") || hdr.Get("Retry-After") == "" {
		t.Errorf("initrd not pulled, cut off: %d, Retry-After %q, %q; want 503 origin unreachable", code, hdr.Get("Retry-After"), b)
	}
	if got, err := get(tftpAddr, "ipxe.efi", 1468); err != nil || !bytes.Equal(got, ipxe) {
		t.Errorf("cached boot file over TFTP, cut off: %d bytes, %v", len(got), err)
	}
	if n := dsrv.JournalLen(); n != 1 {
		t.Errorf("dhcpd journal holds %d renewals, want 1", n)
	}
	// The cut lasts long enough for every watch to be cancelled (no leader)
	// and every cache's relist to fail: the machine keeps asking meanwhile,
	// and keeps getting its default.
	for i := 0; time.Since(cut) < cutFor; i++ {
		if s := script(); bootToken.MatchString(s) {
			t.Fatalf("job dispatched without quorum (%s into the cut):\n%s", time.Since(cut), s)
		}
		time.Sleep(time.Second)
	}

	// Quorum back.
	cl.start(cl.members[1])
	cl.start(cl.members[2])
	restored := time.Now()
	testkit.EventuallyWithin(t, 60*time.Second, "renewal replayed into etcd", func() bool { return dsrv.JournalLen() == 0 })
	t.Logf("journal replayed %s after quorum returned", time.Since(restored).Round(time.Millisecond))
	// The pending job goes out once bootapi can commit its dispatch.
	var dispatched string
	testkit.EventuallyWithin(t, 30*time.Second, "pending job dispatched after quorum returned", func() bool {
		s := script()
		if bootToken.MatchString(s) {
			dispatched = s
			return true
		}
		return false
	})
	t.Logf("job dispatched %s after quorum returned", time.Since(restored).Round(time.Millisecond))
	if code, _ := report(job, bootToken.FindStringSubmatch(dispatched)[1]); code != http.StatusOK {
		t.Errorf("report after quorum returned: %d, want 200", code)
	}

	// The renewal is in etcd, and no address is bound twice.
	resp, err := st.Client().Get(ctx, store.Prefix("leases", "lab"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	byMAC := map[string]string{}
	for _, kv := range resp.Kvs {
		le := &dhcpdv1.Lease{}
		if err := proto.Unmarshal(kv.Value, le); err != nil {
			t.Fatal(err)
		}
		if le.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			continue
		}
		if other, ok := byMAC[le.GetMac()]; ok {
			t.Errorf("%s holds %s and %s", le.GetMac(), other, le.GetIp())
		}
		byMAC[le.GetMac()] = le.GetIp()
		if le.GetIp() == machineIP && (le.GetMac() != mac || le.GetExpireTime().AsTime().Before(renewedUntil.Add(-5*time.Second))) {
			t.Errorf("etcd holds %v for %s, want %s's renewal until about %v", le, machineIP, mac, renewedUntil)
		}
	}
	if byMAC[mac] != machineIP {
		t.Errorf("no bound lease of %s at %s in etcd: %v", mac, machineIP, byMAC)
	}
	if s := dsrv.Stats(); s.OfflineRenewals != 1 || s.Replayed != 1 || s.ReplayConflicts != 0 {
		t.Errorf("dhcpd: %d offline renewals, %d replayed, %d conflicts; want 1, 1, 0", s.OfflineRenewals, s.Replayed, s.ReplayConflicts)
	}
}
