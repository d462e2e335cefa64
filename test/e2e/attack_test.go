//go:build linux

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// TestAttacker runs the whole stack (`bootchain up`, dhcpd authoritative on the
// lab's boot network) and attacks it from another host on that network: a
// namespace at 198.18.0.66 on the same bridge as a real machine that holds a
// DHCP lease. Every attack must fail with a clear error and change nothing; the
// machine's own reinstall must still go through.
func TestAttacker(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tl := buildTools(t)
	l := lab.NewT(t, lab.Config{IPv6: true, KeepDir: os.Getenv("BOOTCHAIN_E2E_KEEP") != ""})
	st := startStack(t, ctx, l, StackConfig{
		Tools: tl, Dir: filepath.Join(l.Dir(), "bootchain"), DHCP: true,
		Args: []string{
			"--dhcpd-interface", l.Bridge(), "--dhcpd-subnet", "198.18.0.0/24", "--dhcpd-pool", "198.18.0.100-198.18.0.200",
			// Low, so that a short flood shows the limit; a machine asks a few times.
			"--bootapi-http-limit-per-ip", "20/s,60",
		},
	})

	// The victim: a real DHCP client that holds a lease, registered, with a job.
	const victimMAC = "52:54:00:bc:a7:01"
	victim, lease := leasedHost(t, ctx, l, "victim", victimMAC)
	victimIP := lease.ACK.YourIPAddr.String()
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, []byte("not really "+filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	job, err := st.Provision(ctx, BootConfig{MAC: victimMAC, Initrd: &Initrd{Path: initrd, Kernel: Kernel{Image: kernel}}})
	if err != nil {
		t.Fatal(err)
	}
	admin := func(svc string) *grpc.ClientConn {
		cc, err := st.Conn(svc)
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}
	jobs := bootapiv1.NewJobServiceClient(admin("bootapi"))
	jobState := func() bootapiv1.JobState {
		t.Helper()
		r, err := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: job})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetJob().GetState()
	}
	// A viewer's token, as if leaked from a dashboard.
	viewer, err := bootapiv1.NewCredentialServiceClient(admin("bootapi")).CreateToken(ctx, &bootapiv1.CreateTokenRequest{Name: "dashboard", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}

	attacker := attachHost(t, ctx, l, "evil", "198.18.0.66/24")
	server := "198.18.0.1"
	before := snapshot(t, ctx, admin, victimIP)

	t.Run("gRPC", func(t *testing.T) {
		dial := func(creds credentials.TransportCredentials, opts ...grpc.DialOption) func(port int) *grpc.ClientConn {
			return func(port int) *grpc.ClientConn {
				cc, err := grpc.NewClient(fmt.Sprintf("passthrough:///%s:%d", server, port), append([]grpc.DialOption{
					grpc.WithTransportCredentials(creds),
					grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return attacker.DialContext(ctx, "tcp", a) }),
				}, opts...)...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cc.Close() })
				return cc
			}
		}
		// The attacker does not have the CA: it skips verifying the server.
		noVerify := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
		mine := selfSigned(t)
		for name, c := range map[string]struct {
			conn func(port int) *grpc.ClientConn
			want codes.Code
		}{
			"plaintext":            {dial(insecure.NewCredentials()), codes.Unavailable},
			"TLS, no credential":   {dial(noVerify), codes.Unauthenticated},
			"TLS, a made-up token": {dial(noVerify, grpc.WithPerRPCCredentials(bearer("bct_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))), codes.Unauthenticated},
			// Sent even though the server asks for certificates of its own CA: the
			// handshake fails.
			"TLS, a certificate of mine": {dial(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &mine, nil }})), codes.Unavailable},
			"TLS, a viewer's token":      {dial(noVerify, grpc.WithPerRPCCredentials(bearer(viewer.GetSecret()))), codes.PermissionDenied},
		} {
			t.Run(name, func(t *testing.T) {
				bootapi, dhcpd, arts := c.conn(9080), c.conn(9082), c.conn(9081)
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				defer ccancel()
				attacks := map[string]func() error{
					"CreateJob": func() error {
						_, err := bootapiv1.NewJobServiceClient(bootapi).CreateJob(cctx, &bootapiv1.CreateJobRequest{Mac: victimMAC, Profile: "e2e"})
						return err
					},
					"CancelJob": func() error {
						_, err := bootapiv1.NewJobServiceClient(bootapi).CancelJob(cctx, &bootapiv1.CancelJobRequest{Id: job})
						return err
					},
					"UpdateProfile": func() error {
						_, err := bootapiv1.NewProfileServiceClient(bootapi).UpdateProfile(cctx, &bootapiv1.UpdateProfileRequest{
							Profile:    &bootapiv1.Profile{Name: "e2e", Cmdline: "init=/bin/sh"},
							UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"cmdline"}}})
						return err
					},
					"PutSite": func() error {
						_, err := bootapiv1.NewSiteServiceClient(bootapi).PutSite(cctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "default", ArtifactUrl: "http://198.18.0.66/"}})
						return err
					},
					"ReleaseLease": func() error {
						_, err := dhcpdv1.NewLeaseServiceClient(dhcpd).ReleaseLease(cctx, &dhcpdv1.ReleaseLeaseRequest{Site: "default", Ip: victimIP})
						return err
					},
					"Upload": func() error {
						up, err := artifactv1.NewArtifactServiceClient(arts).Upload(cctx)
						if err != nil {
							return err
						}
						up.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Name: "e2e/vmlinuz"}}})
						up.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Chunk{Chunk: []byte("evil kernel")}})
						_, err = up.CloseAndRecv()
						return err
					},
					"Delete": func() error {
						_, err := artifactv1.NewArtifactServiceClient(arts).Delete(cctx, &artifactv1.DeleteRequest{Name: "e2e/initrd.gz", Force: true})
						return err
					},
				}
				for what, attack := range attacks {
					err := attack()
					if status.Code(err) != c.want {
						t.Errorf("%s: %v, want %v", what, err, c.want)
					}
				}
			})
		}
		if after := snapshot(t, ctx, admin, victimIP); after != before {
			t.Errorf("state changed under the gRPC attacks:\nbefore %s\nafter  %s", before, after)
		}
	})

	base := "http://" + server + ":8080"
	// The installer's callback URL is HTTPS, with the stack's CA.
	ca, err := os.ReadFile(filepath.Join(st.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	victimHTTP := httpFrom(victim, roots)
	evilHTTP := httpFrom(attacker, roots)
	t.Run("boot path", func(t *testing.T) {
		cfgURL := base + "/ipxe/v1/config?mac=" + url.QueryEscape(victimMAC)
		// Another host asks for the victim's script: the default, no job, no token.
		code, body := do(t, evilHTTP, "GET", cfgURL, "")
		if code != 200 || strings.Contains(body, "bootchain.token=") || jobState() != bootapiv1.JobState_JOB_STATE_PENDING {
			t.Fatalf("stranger's GET: %d, token in answer %v, job %v; want the default and the job still pending:\n%s", code, strings.Contains(body, "bootchain.token="), jobState(), body)
		}
		// HEAD from the machine itself changes nothing.
		if code, _ := do(t, victimHTTP, "HEAD", cfgURL, ""); code != 200 || jobState() != bootapiv1.JobState_JOB_STATE_PENDING {
			t.Fatalf("HEAD: %d, job %v; want 200 and the job still pending", code, jobState())
		}
		// The machine's own GET dispatches it.
		code, body = do(t, victimHTTP, "GET", cfgURL, "")
		m := regexp.MustCompile(`bootchain\.callback=(\S+) bootchain\.token=(\S+)`).FindStringSubmatch(body)
		if code != 200 || m == nil || jobState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
			t.Fatalf("machine's GET: %d, job %v:\n%s", code, jobState(), body)
		}
		cb, token := m[1], m[2]
		if !strings.HasPrefix(cb, "https://") {
			t.Errorf("callback URL %s, want HTTPS by default", cb)
		}
		form := func(tok, state string) string {
			return url.Values{"token": {tok}, "state": {state}}.Encode()
		}
		// The token sniffed off the wire, used from elsewhere; a wrong token from
		// the machine's address; the token in the URL.
		for name, c := range map[string]struct {
			client     *http.Client
			url, body  string
			wantStatus int
		}{
			"sniffed token, other host": {evilHTTP, cb, form(token, "succeeded"), 403},
			"wrong token":               {victimHTTP, cb, form("x"+token[1:], "succeeded"), 403},
			"token in the URL":          {evilHTTP, cb + "&token=" + url.QueryEscape(token), form(token, "succeeded"), 400},
		} {
			if code, body := do(t, c.client, "POST", c.url, c.body); code != c.wantStatus {
				t.Errorf("%s: %d %q, want %d", name, code, body, c.wantStatus)
			}
		}
		if jobState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
			t.Fatalf("job %v after refused reports, want dispatched", jobState())
		}
		if s, err := bootapiv1.NewSessionServiceClient(admin("bootapi")).GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: victimMAC}); err != nil {
			t.Fatal(err)
		} else if strings.Contains(strings.Join(hopNames(s.GetSession()), " "), "callback") {
			t.Errorf("a refused report left a callback hop: %v", hopNames(s.GetSession()))
		}
		// The installer's first report exchanges the cmdline token; once a
		// report has used the fresh token, the cmdline token is dead (until
		// then it may be presented again, for a minute, by an installer whose
		// answer was lost: docs/security.md).
		code, body = do(t, victimHTTP, "POST", cb, form(token, "running"))
		fresh := regexp.MustCompile(`(?m)^token (\S+)$`).FindStringSubmatch(body)
		if code != 200 || fresh == nil {
			t.Fatalf("first report: %d %q, want 200 with a fresh token", code, body)
		}
		if code, body := do(t, victimHTTP, "POST", cb, form(fresh[1], "running")); code != 200 {
			t.Fatalf("progress report with the fresh token: %d %q, want 200", code, body)
		}
		if code, body := do(t, victimHTTP, "POST", cb, form(token, "succeeded")); code != 403 {
			t.Errorf("bootstrap token replayed after the fresh token was used: %d %q, want 403", code, body)
		}
		if code, body := do(t, victimHTTP, "POST", cb, form(fresh[1], "succeeded")); code != 200 || jobState() != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
			t.Errorf("report with the fresh token: %d %q, job %v", code, body, jobState())
		}
	})

	t.Run("discovery", func(t *testing.T) {
		machines := bootapiv1.NewMachineServiceClient(admin("bootapi"))
		count := func() int {
			r, err := machines.ListMachines(ctx, &bootapiv1.ListMachinesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			return len(r.GetMachines())
		}
		n := count()
		// Random MACs from a host that holds no lease (below the HTTP limit).
		for i := range 40 {
			mac := fmt.Sprintf("02:66:66:00:%02x:%02x", i/256, i%256)
			if code, _ := do(t, evilHTTP, "GET", base+"/ipxe/v1/config?mac="+url.QueryEscape(mac), ""); code != 200 {
				t.Fatalf("GET for %s: %d", mac, code)
			}
		}
		time.Sleep(time.Second) // sightings are written in batches: give them the chance
		if got := count(); got != n {
			t.Errorf("machines: %d after a loop of random MACs, want %d (no lease, no record)", got, n)
		}
	})

	t.Run("HTTP flood", func(t *testing.T) {
		limited := 0
		for range 200 {
			if code, _ := do(t, evilHTTP, "GET", base+"/healthz", ""); code == http.StatusTooManyRequests {
				limited++
			}
		}
		if limited == 0 {
			t.Errorf("200 requests at once from one host: none limited")
		}
		if code, _ := do(t, victimHTTP, "GET", base+"/ipxe/v1/config?mac="+url.QueryEscape(victimMAC), ""); code != 200 {
			t.Errorf("the machine during the flood: %d, want 200", code)
		}
	})

	t.Run("DHCP relay spoof", func(t *testing.T) {
		var conn net.PacketConn
		if err := attacker.Do(func() (err error) { conn, err = net.ListenPacket("udp4", "198.18.0.66:67"); return err }); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		d, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x02, 0x66, 0, 0, 0, 1}, dhcpv4.WithGatewayIP(net.ParseIP("198.18.0.99")))
		for range 3 {
			if _, err := conn.WriteTo(d.ToBytes(), &net.UDPAddr{IP: net.ParseIP(server), Port: 67}); err != nil {
				t.Fatal(err)
			}
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := conn.ReadFrom(make([]byte, 1500)); err == nil {
			t.Error("a DISCOVER with a giaddr that is not its source got an answer")
		}
	})

	t.Run("audit", func(t *testing.T) {
		r, err := bootapiv1.NewAuditServiceClient(admin("bootapi")).ListAuditEvents(ctx, &bootapiv1.ListAuditEventsRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var refused, callbacks int
		for _, ev := range r.GetEvents() {
			if strings.HasPrefix(ev.GetPeer(), "198.18.0.66:") && (ev.GetOutcome() == "Unauthenticated" || ev.GetOutcome() == "PermissionDenied") {
				refused++
			}
			if ev.GetAction() == "http.callback" {
				callbacks++
			}
		}
		if refused == 0 || callbacks < 3 {
			t.Errorf("audit log: %d refused calls from the attacker, %d callbacks; want both", refused, callbacks)
		}
	})
}

// leasedHost adds a namespace on the lab's bridge whose eth0 has MAC mac and
// the address dhcpd leases it, in an exchange whose packets mods change.
func leasedHost(t *testing.T, ctx context.Context, l *lab.Lab, name, mac string, mods ...dhcpv4.Modifier) (*lab.Netns, *nclient4.Lease) {
	t.Helper()
	ns := attachHost(t, ctx, l, name, "")
	if _, err := ns.IP(ctx, "link", "set", "eth0", "address", mac); err != nil {
		t.Fatal(err)
	}
	var dc *nclient4.Client
	if err := ns.Do(func() (err error) {
		dc, err = nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lease, err := dc.Request(ctx, mods...)
	dc.Close()
	if err != nil {
		t.Fatalf("%s: DHCP: %v", name, err)
	}
	if _, err := ns.IP(ctx, "addr", "add", lease.ACK.YourIPAddr.String()+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	return ns, lease
}

// attachHost adds a namespace on the lab's bridge, its eth0 at addr (none if empty).
func attachHost(t *testing.T, ctx context.Context, l *lab.Lab, name, addr string) *lab.Netns {
	t.Helper()
	ns, err := l.AddNetns(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	end := lab.Endpoint{NS: ns, Name: "eth0"}
	if addr != "" {
		end.Addr = netip.MustParsePrefix(addr)
	}
	if err := l.AddVeth(ctx, end, lab.Endpoint{NS: l.Main(), Name: "v" + name, Master: l.Bridge()}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// httpFrom is an HTTP client whose connections start in ns, trusting roots.
func httpFrom(ns *lab.Netns, roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: ns.DialContext, DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
}

func do(t *testing.T, c *http.Client, method, u, form string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// bearer presents a token; the attacker sends it over TLS it did not verify.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// selfSigned is a client certificate of the attacker's own making, naming
// itself an admin.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("bootchain://admin/admin")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "admin"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// snapshot is what the gRPC attacks go after, read with the admin's
// credential: jobs, the profile, the site, the artifacts and the victim's lease.
func snapshot(t *testing.T, ctx context.Context, admin func(string) *grpc.ClientConn, leaseIP string) string {
	t.Helper()
	var msgs []proto.Message
	add := func(m proto.Message, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	add(bootapiv1.NewJobServiceClient(admin("bootapi")).ListJobs(ctx, &bootapiv1.ListJobsRequest{}))
	add(bootapiv1.NewProfileServiceClient(admin("bootapi")).GetProfile(ctx, &bootapiv1.GetProfileRequest{Name: "e2e"}))
	add(bootapiv1.NewSiteServiceClient(admin("bootapi")).GetSite(ctx, &bootapiv1.GetSiteRequest{Name: "default"}))
	add(artifactv1.NewArtifactServiceClient(admin("artifactstore")).List(ctx, &artifactv1.ListRequest{}))
	add(dhcpdv1.NewLeaseServiceClient(admin("dhcpd")).GetLease(ctx, &dhcpdv1.GetLeaseRequest{Site: "default", Ip: leaseIP}))
	var b strings.Builder
	for _, m := range msgs {
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%x;", raw)
	}
	return b.String()
}
