package bootapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// attacker is a loopback address that holds no lease.
const attacker = "127.66.66.66"

// pendingJob seeds mac with its lease and a pending job.
func pendingJob(t *testing.T, h *harness) string {
	t.Helper()
	h.seed(t, mac)
	jr, err := h.jobs.CreateJob(context.Background(), &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	return jr.GetJob().GetId()
}

// dispatched seeds a pending job and has the machine fetch it: its installer.
func dispatched(t *testing.T, h *harness) (string, *installer) {
	t.Helper()
	id := pendingJob(t, h)
	code, body := h.get(t, "/ipxe/v1/config?mac="+mac)
	if code != 200 || !strings.Contains(body, "bootchain.token=") {
		t.Fatalf("the machine did not get its job: %d\n%s", code, body)
	}
	return id, newInstaller(t, mac, body)
}

// hops is the machine's latest session's hops (after a flush).
func (h *harness) hops(t *testing.T) []*bootapiv1.Hop {
	t.Helper()
	ctx := context.Background()
	if err := h.srv.FlushSessions(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
	if err != nil {
		t.Fatal(err)
	}
	return s.GetSession().GetHops()
}

// Another host asking for the victim's script gets its default: no dispatch,
// no token, and the hop says why. The machine itself then gets the job.
func TestStrangerGetsNoJob(t *testing.T) {
	h := start(t, storetest.New(t))
	id := pendingJob(t, h)
	for i := 0; i < 3; i++ {
		code, body := h.getFrom(t, attacker, "/ipxe/v1/config?mac="+mac)
		if code != 200 || strings.Contains(body, "bootchain.token=") || strings.Contains(body, "kernel ") {
			t.Fatalf("stranger got the job: %d\n%s", code, body)
		}
	}
	if s := getJob(t, h, id).GetState(); s != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("job %v after a stranger's requests, want pending", s)
	}
	hops := h.hops(t)
	if len(hops) == 0 || !strings.Contains(hops[len(hops)-1].GetDetail(), "job "+id+" not dispatched: "+attacker+" does not hold a lease") {
		t.Fatalf("hop does not say why the job was withheld: %v", hops)
	}
	// An expired lease is no lease.
	rev, err := h.st.Put(context.Background(), store.Key("leases", "default", attacker), leaseOf(mac, attacker, time.Now().Add(-time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.srv.WaitLeases(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	if _, body := h.getFrom(t, attacker, "/ipxe/v1/config?mac="+mac); strings.Contains(body, "bootchain.token=") {
		t.Fatalf("an expired lease's address got the job:\n%s", body)
	}
	if _, body := h.get(t, "/ipxe/v1/config?mac="+mac); !strings.Contains(body, "bootchain.token=") {
		t.Fatalf("the machine did not get its job:\n%s", body)
	}
	j := getJob(t, h, id)
	if j.GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED || j.GetDispatchIp() != machineIP(mac) {
		t.Fatalf("job after the machine's request: %v from %q", j.GetState(), j.GetDispatchIp())
	}
}

// HEAD never changes state: no dispatch, no session, no discovered record.
func TestHeadChangesNothing(t *testing.T) {
	h := start(t, storetest.New(t))
	id := pendingJob(t, h)
	const unknown = "52:54:00:aa:bb:01"
	h.lease(t, unknown)
	for _, m := range []string{mac, unknown} {
		req, _ := http.NewRequest(http.MethodHead, h.base+"/ipxe/v1/config?mac="+m, nil)
		resp, err := clientFrom(machineIP(m)).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength <= 0 {
			t.Fatalf("HEAD %s: %d, length %d", m, resp.StatusCode, resp.ContentLength)
		}
	}
	// A GET of another machine afterwards: once its effects are written, a HEAD's
	// would have been too.
	h.get(t, "/ipxe/v1/config?mac=52:54:00:aa:bb:02")
	ctx := context.Background()
	if err := h.srv.FlushSessions(ctx); err != nil {
		t.Fatal(err)
	}
	if s := getJob(t, h, id).GetState(); s != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("job %v after HEAD, want pending", s)
	}
	for _, m := range []string{mac, unknown} {
		if _, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: m}); status.Code(err) != codes.NotFound {
			t.Errorf("session of %s after HEAD: %v, want NotFound", m, err)
		}
	}
	h.svc.Stop() // writes the queued sightings
	if n := count(t, h, store.Prefix("machines")); n != 1 {
		t.Fatalf("%d machine records after HEAD, want the one registered", n)
	}
}

// count is the number of keys under prefix in etcd.
func count(t *testing.T, h *harness, prefix string) int64 {
	t.Helper()
	r, err := h.st.Client().Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return r.Count
}

// The callback token: body only, spent after the exchange, bound to the
// dispatch address; a refused report changes neither the job nor the session.
func TestCallbackTokenRules(t *testing.T) {
	h := start(t, storetest.New(t))
	id, inst := dispatched(t, h)
	bootstrap := inst.token
	hopsBefore := len(h.hops(t))
	unchanged := func(what string) {
		t.Helper()
		j := getJob(t, h, id)
		if j.GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED || len(j.GetReports()) != 0 || j.GetTokenExchanged() {
			t.Fatalf("%s changed the job: %v, %d reports", what, j.GetState(), len(j.GetReports()))
		}
		if hops := h.hops(t); len(hops) != hopsBefore {
			t.Fatalf("%s added a hop: %v", what, hops[hopsBefore:])
		}
	}
	// In the query, even with the body right too: 400.
	code, body := post(t, inst.from, inst.cb+"&token="+bootstrap, url.Values{"token": {bootstrap}, "state": {"succeeded"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "token: send it in the POST body") {
		t.Fatalf("token in the query: %d %s", code, body)
	}
	unchanged("a token in the query")
	// The right token from another address: 403.
	if code, _ := post(t, attacker, inst.cb, url.Values{"token": {bootstrap}, "state": {"succeeded"}}); code != http.StatusForbidden {
		t.Fatalf("report from another address: %d", code)
	}
	unchanged("a report from another address")
	// A wrong token from the right address: 403.
	if code, _ := post(t, inst.from, inst.cb, url.Values{"token": {strings.Repeat("0", 64)}, "state": {"failed"}}); code != http.StatusForbidden {
		t.Fatalf("wrong token: %d", code)
	}
	unchanged("a wrong token")

	// The exchange.
	code, body = inst.report(t, url.Values{"state": {"running"}, "progress": {"10"}})
	if code != 200 || inst.token == bootstrap {
		t.Fatalf("first report: %d %q", code, body)
	}
	j := getJob(t, h, id)
	if !j.GetTokenExchanged() || j.GetState() != bootapiv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("after the exchange: %v exchanged=%v", j.GetState(), j.GetTokenExchanged())
	}
	// The answer was lost: the installer presents the bootstrap token again,
	// before it ever used the fresh one, and gets another fresh token; the
	// first fresh token is dead.
	lost := inst.token
	inst.token = bootstrap
	if code, body := inst.report(t, url.Values{"state": {"running"}, "progress": {"10"}}); code != 200 || inst.token == bootstrap || inst.token == lost {
		t.Fatalf("first report again after a lost answer: %d %q", code, body)
	}
	if code, _ := post(t, inst.from, inst.cb, url.Values{"token": {lost}, "state": {"succeeded"}}); code != http.StatusForbidden {
		t.Fatalf("the fresh token of the lost answer: %d", code)
	}
	if code, body := inst.report(t, url.Values{"state": {"running"}, "progress": {"20"}}); code != 200 {
		t.Fatalf("report with the fresh token: %d %s", code, body)
	}
	// Once the fresh token is in use, the bootstrap token (what /proc/cmdline
	// still shows) is spent.
	if code, _ := post(t, inst.from, inst.cb, url.Values{"token": {bootstrap}, "state": {"succeeded"}}); code != http.StatusForbidden {
		t.Fatalf("bootstrap token replayed after the exchange: %d", code)
	}
	if j2 := getJob(t, h, id); j2.GetState() != bootapiv1.JobState_JOB_STATE_RUNNING || len(j2.GetReports()) != 3 {
		t.Fatalf("replay changed the job: %v, %d reports", j2.GetState(), len(j2.GetReports()))
	}
	if j2 := getJob(t, h, id); len(j2.GetTokenHash()) != 0 || len(j2.GetBootstrapTokenHash()) != 0 {
		t.Fatal("the API returned a token hash")
	}
	if code, body := inst.report(t, url.Values{"state": {"succeeded"}}); code != 200 {
		t.Fatalf("report with the fresh token: %d %s", code, body)
	}
	// Its answer was lost: the same final report again is ok and changes
	// nothing; another final state is a conflict.
	if code, body := inst.report(t, url.Values{"state": {"succeeded"}}); code != 200 || !strings.HasPrefix(body, "ok ") {
		t.Fatalf("the final report again: %d %s", code, body)
	}
	if code, _ := inst.report(t, url.Values{"state": {"failed"}}); code != http.StatusConflict {
		t.Fatalf("another final state after success: %d", code)
	}
	if j2 := getJob(t, h, id); j2.GetState() != bootapiv1.JobState_JOB_STATE_SUCCEEDED || len(j2.GetReports()) != 4 {
		t.Fatalf("repeats changed the job: %v, %d reports", j2.GetState(), len(j2.GetReports()))
	}
}

// A loop of random MACs: where dhcpd is authoritative, none without a lease
// is recorded; in proxy mode, at most the cap.
func TestDiscoveryBounded(t *testing.T) {
	const cap = 5
	h := start(t, storetest.New(t), func(c *bootapi.Config) { c.Discovery.Cap = cap })
	h.seed(t)
	proxied := map[string]bool{}
	get := func(i int) string {
		m := fmt.Sprintf("52:54:01:00:%02x:%02x", i>>8&0xff, i&0xff)
		if code, _ := h.get(t, "/ipxe/v1/config?mac="+m); code != 200 {
			t.Fatalf("%s: %d", m, code)
		}
		return m
	}
	for i := 0; i < 40; i++ {
		get(i)
	}
	ctx := context.Background()
	if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "default",
		Dhcp: &bootapiv1.SiteDhcp{Mode: bootapiv1.DhcpMode_DHCP_MODE_PROXY}}}); err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 140; i++ {
		proxied[get(i)] = true
	}
	h.svc.Stop() // writes what is queued
	if n := count(t, h, store.Prefix("machines")); n != cap {
		t.Fatalf("%d discovered machines, want the cap, %d", n, cap)
	}
	r, err := h.st.Client().Get(ctx, store.Prefix("machines"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range r.Kvs {
		if !proxied[strings.TrimPrefix(string(kv.Key), store.Prefix("machines"))] {
			t.Errorf("recorded %s: not one of the proxy-mode requests", kv.Key)
		}
	}
}

// A discovered record not seen for the TTL goes; a registered one and a
// recent one stay.
func TestDiscoveredExpire(t *testing.T) {
	h := start(t, storetest.New(t), func(c *bootapi.Config) { c.Discovery.TTL = time.Hour })
	ctx := context.Background()
	old := timestamppb.New(time.Now().Add(-2 * time.Hour))
	for m, rec := range map[string]*bootapiv1.Machine{
		"52:54:00:00:00:01": {Mac: "52:54:00:00:00:01", Discovered: true, CreateTime: old, LastSeenTime: old},
		"52:54:00:00:00:02": {Mac: "52:54:00:00:00:02", Discovered: true, CreateTime: old, LastSeenTime: timestamppb.Now()},
		"52:54:00:00:00:03": {Mac: "52:54:00:00:00:03", CreateTime: old, LastSeenTime: old},
	} {
		if _, err := h.st.Put(ctx, store.Key("machines", m), rec); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "stale discovered machine deleted", func() bool { return count(t, h, store.Key("machines", "52:54:00:00:00:01")) == 0 })
	if n := count(t, h, store.Prefix("machines")); n != 2 {
		t.Fatalf("%d machines left, want 2", n)
	}
}

// In proxy mode the job goes to the address dhcpd saw the machine request in
// its current boot session, and to no other.
func TestProxyModeDispatch(t *testing.T) {
	h := start(t, storetest.New(t))
	ctx := context.Background()
	if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "default",
		Dhcp: &bootapiv1.SiteDhcp{Mode: bootapiv1.DhcpMode_DHCP_MODE_PROXY}}}); err != nil {
		t.Fatal(err)
	}
	id := pendingJob(t, h)
	// No dhcpd hop yet: the machine's own address is not enough.
	if _, body := h.get(t, "/ipxe/v1/config?mac="+mac); strings.Contains(body, "bootchain.token=") {
		t.Fatalf("dispatched without dhcpd's record:\n%s", body)
	}
	if err := h.srv.FlushSessions(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
	if err != nil {
		t.Fatal(err)
	}
	// dhcpd observed the machine's REQUEST to the site's DHCP server.
	hop := &bootapiv1.Hop{Name: "dhcp.request", Service: "dhcpd", StartTime: timestamppb.Now(),
		Attributes: map[string]string{"dhcp.offered_ip": machineIP(mac)}}
	key := store.Key("sessionhops", mac, s.GetSession().GetTraceId(), fmt.Sprintf("%d-%016x", time.Now().UnixNano(), 1))
	if _, err := h.st.Put(ctx, key, hop); err != nil {
		t.Fatal(err)
	}
	if _, body := h.getFrom(t, attacker, "/ipxe/v1/config?mac="+mac); strings.Contains(body, "bootchain.token=") {
		t.Fatalf("a stranger got the job in proxy mode:\n%s", body)
	}
	if _, body := h.get(t, "/ipxe/v1/config?mac="+mac); !strings.Contains(body, "bootchain.token=") {
		t.Fatalf("the machine did not get its job in proxy mode:\n%s", body)
	}
	if s := getJob(t, h, id).GetState(); s != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatalf("job %v", s)
	}
}

// With the HTTPS listener on, the job's callback is the https URL and an
// installer reports over TLS (a real TLS client checking the certificate).
func TestHTTPSCallback(t *testing.T) {
	dir := t.TempDir()
	pool := selfSigned(t, dir)
	h := start(t, storetest.New(t), func(c *bootapi.Config) {
		c.HTTPSAddr = "127.0.0.1:0"
		c.HTTPSTLS.CertFile, c.HTTPSTLS.KeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	})
	id, inst := dispatched(t, h)
	want := "https://" + h.srv.HTTPSAddr().String() + "/ipxe/v1/report?job=" + id
	if inst.cb != want {
		t.Fatalf("callback %q, want %q", inst.cb, want)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(inst.from)}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	for i, st := range []string{"running", "succeeded"} {
		resp, err := c.PostForm(inst.cb, url.Values{"token": {inst.token}, "state": {st}})
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 512)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS == nil {
			t.Fatalf("%s over https: %d %s", st, resp.StatusCode, b[:n])
		}
		if m := freshTokenRE.FindSubmatch(b[:n]); i == 0 && m != nil {
			inst.token = string(m[1])
		}
	}
	if s := getJob(t, h, id).GetState(); s != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", s)
	}
	// A client that does not trust the certificate gets no answer.
	if _, err := http.Post(inst.cb, "application/x-www-form-urlencoded", strings.NewReader("state=failed")); err == nil {
		t.Fatal("an untrusting client got an answer")
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and returns
// a pool that trusts it.
func selfSigned(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bootapi"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
