package artifactstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/diagnose"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// instance is one running artifactstore.
type instance struct {
	srv  *artifactstore.Server
	cli  artifactv1.ArtifactServiceClient
	base string // http://127.0.0.1:port
	dir  string
	st   *store.Store
	svc  *testkit.Service
}

type opts struct {
	dir     string
	origin  string
	maxSize int64
	site    string
	rec     *session.Recorder
	lis     net.Listener
	// cfg, when set, adjusts the configuration last (integrity tests).
	cfg func(*artifactstore.Config)
	// clientTLS is how the test's own client reaches the gRPC listener.
	clientTLS tlsconf.Files
	// originToken is the replica's credential at the origin; default a service
	// token minted in the replica's etcd (the origin's too, when they share it).
	originToken string
}

func start(t testing.TB, e *storetest.Etcd, o opts) *instance {
	t.Helper()
	st := e.Client(t)
	cfg := artifactstore.DefaultConfig()
	cfg.HTTPAddr, cfg.GRPC.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Store, cfg.Origin, cfg.Sessions = st, o.origin, o.rec
	cfg.DataDir = o.dir
	cfg.HTTPListener = o.lis
	if o.origin != "" {
		// A replica reads from its origin as a service.
		cfg.OriginToken = o.originToken
		if cfg.OriginToken == "" {
			cfg.OriginToken = testkit.Token(t, st, auth.RoleService)
		}
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if o.maxSize > 0 {
		cfg.MaxSize = o.maxSize
	}
	if o.site != "" {
		cfg.Site = o.site
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := artifactstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc := testkit.Run(t, "artifactstore", srv.Run)
	cc, err := grpcclient.Dial(srv.GRPCAddr().String(), o.clientTLS, grpcclient.WithToken(testkit.AdminToken(t, st)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	in := &instance{srv: srv, cli: artifactv1.NewArtifactServiceClient(cc), base: "http://" + srv.HTTPAddr().String(), dir: cfg.DataDir, st: st, svc: svc}
	// It serves once its cache is loaded, and says so on /readyz.
	testkit.WaitHTTP(t, in.base+"/healthz")
	testkit.WaitHTTP(t, in.base+"/readyz")
	return in
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func upload(ctx context.Context, cli artifactv1.ArtifactServiceClient, h *artifactv1.UploadHeader, data []byte) (*artifactv1.UploadResponse, error) {
	stream, err := cli.Upload(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Header{Header: h}}); err != nil {
		return nil, err
	}
	for len(data) > 0 {
		n := min(len(data), 1<<20)
		if err := stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Chunk{Chunk: data[:n]}}); err != nil {
			break // the server ended the stream; CloseAndRecv has its status
		}
		data = data[n:]
	}
	return stream.CloseAndRecv()
}

func mustUpload(t testing.TB, in *instance, name string, data []byte) *artifactv1.Artifact {
	t.Helper()
	resp, err := upload(context.Background(), in.cli, &artifactv1.UploadHeader{Name: name, ContentType: "application/x-test"}, data)
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	return resp.GetArtifact()
}

func readAll(t *testing.T, cli artifactv1.ArtifactServiceClient, req *artifactv1.ReadRequest) (*artifactv1.Artifact, []byte, error) {
	t.Helper()
	stream, err := cli.Read(context.Background(), req)
	if err != nil {
		return nil, nil, err
	}
	var a *artifactv1.Artifact
	var buf bytes.Buffer
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return a, buf.Bytes(), nil
		}
		if err != nil {
			return a, buf.Bytes(), err
		}
		if msg.GetArtifact() != nil {
			a = msg.GetArtifact()
		}
		buf.Write(msg.GetChunk())
	}
}

func httpGet(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// blobFiles lists every file under the data dir's blobs and tmp folders.
func blobFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"blobs", "tmp"} {
		filepath.WalkDir(filepath.Join(dir, sub), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				out = append(out, strings.TrimPrefix(p, dir+"/"))
			}
			return nil
		})
	}
	return out
}

func TestUploadStatListReadDelete(t *testing.T) {
	e := storetest.Start(t)
	in := start(t, e, opts{site: "lab"})
	ctx := context.Background()
	data := randBytes(t, 3<<20+17)
	a := mustUpload(t, in, "debian/12/linux", data)
	if a.GetSha256() != digest(data) || a.GetSize() != int64(len(data)) || a.GetOriginSite() != "lab" || a.GetContentType() != "application/x-test" {
		t.Fatalf("stored %v", a)
	}
	want := blobFiles(t, in.dir)
	if diff := cmp.Diff([]string{"blobs/sha256/" + a.GetSha256()[:2] + "/" + a.GetSha256()}, want); diff != "" {
		t.Fatalf("files on disk (-want +got):\n%s", diff)
	}

	// Same content again: unchanged, times kept.
	again, err := upload(ctx, in.cli, &artifactv1.UploadHeader{Name: "debian/12/linux", ContentType: "application/x-test", Sha256: digest(data), Size: int64(len(data))}, data)
	if err != nil || !again.GetUnchanged() || !again.GetArtifact().GetUpdateTime().AsTime().Equal(a.GetUpdateTime().AsTime()) {
		t.Fatalf("re-upload: %v %v", again, err)
	}

	st, err := in.cli.Stat(ctx, &artifactv1.StatRequest{Name: "debian/12/linux"})
	if err != nil || !st.GetLocal() || st.GetArtifact().GetSha256() != a.GetSha256() {
		t.Fatalf("stat: %v %v", st, err)
	}
	mustUpload(t, in, "undionly.kpxe", []byte("pxe"))
	list, err := in.cli.List(ctx, &artifactv1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range list.GetArtifacts() {
		names = append(names, x.GetName())
	}
	if diff := cmp.Diff([]string{"debian/12/linux", "undionly.kpxe"}, names); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}
	if list, _ := in.cli.List(ctx, &artifactv1.ListRequest{Prefix: "debian/"}); len(list.GetArtifacts()) != 1 {
		t.Errorf("list with prefix: %v", list)
	}

	got, body, err := readAll(t, in.cli, &artifactv1.ReadRequest{Name: "debian/12/linux"})
	if err != nil || got.GetSha256() != a.GetSha256() || !bytes.Equal(body, data) {
		t.Fatalf("read: %v, %d bytes, err %v", got, len(body), err)
	}
	_, body, err = readAll(t, in.cli, &artifactv1.ReadRequest{Name: "debian/12/linux", Offset: 1000, Length: 300000})
	if err != nil || !bytes.Equal(body, data[1000:301000]) {
		t.Fatalf("read part: %d bytes, err %v", len(body), err)
	}
	if _, _, err := readAll(t, in.cli, &artifactv1.ReadRequest{Name: "debian/12/linux", Offset: int64(len(data)) + 1}); apierr.FieldOf(err) != "offset" {
		t.Errorf("read past end: %v", err)
	}
	resp, body := httpGet(t, in.base+"/artifacts/debian/12/linux", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) || resp.Header.Get("ETag") != `"`+a.GetSha256()+`"` {
		t.Fatalf("GET: %d, %d bytes, etag %q", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}

	// A profile refers to the kernel: Delete refuses, naming it; force deletes.
	prof := &bootapiv1.Profile{Name: "debian-12", Kernel: &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "undionly.kpxe"}},
		Initrds: []*bootapiv1.ArtifactRef{{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "debian/12/linux"}}}}
	if _, err := in.st.Put(ctx, store.Key("profiles", "debian-12"), prof); err != nil {
		t.Fatal(err)
	}
	_, err = in.cli.Delete(ctx, &artifactv1.DeleteRequest{Name: "debian/12/linux"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "debian-12") {
		t.Fatalf("delete of a used artifact: %v", err)
	}
	// Forcing past the reference needs the digest the operator means to delete.
	_, err = in.cli.Delete(ctx, &artifactv1.DeleteRequest{Name: "debian/12/linux", Force: true})
	if status.Code(err) != codes.InvalidArgument || apierr.FieldOf(err) != "sha256" || !strings.Contains(err.Error(), a.GetSha256()) {
		t.Fatalf("forced delete without sha256: %v", err)
	}
	_, err = in.cli.Delete(ctx, &artifactv1.DeleteRequest{Name: "debian/12/linux", Force: true, Sha256: digest([]byte("x"))})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), a.GetSha256()) {
		t.Fatalf("forced delete with a stale sha256: %v", err)
	}
	del, err := in.cli.Delete(ctx, &artifactv1.DeleteRequest{Name: "debian/12/linux", Force: true, Sha256: a.GetSha256()})
	if err != nil || len(del.GetReferencedBy()) != 1 {
		t.Fatalf("forced delete: %v %v", del, err)
	}
	if _, err := in.cli.Stat(ctx, &artifactv1.StatRequest{Name: "debian/12/linux"}); status.Code(err) != codes.NotFound {
		t.Errorf("stat after delete: %v", err)
	}
	if resp, _ := httpGet(t, in.base+"/artifacts/debian/12/linux", nil); resp.StatusCode != 404 {
		t.Errorf("GET after delete: %d", resp.StatusCode)
	}
	if _, err := in.cli.Delete(ctx, &artifactv1.DeleteRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("delete missing: %v", err)
	}
	// The deleted content's blob goes once nothing refers to it.
	testkit.Eventually(t, "the deleted blob to go", func() bool {
		for _, f := range blobFiles(t, in.dir) {
			if strings.HasSuffix(f, a.GetSha256()) {
				return false
			}
		}
		return true
	})
}

func TestUploadRejects(t *testing.T) {
	e := storetest.Start(t)
	in := start(t, e, opts{maxSize: 1 << 20})
	ctx := context.Background()
	data := randBytes(t, 1000)
	tests := map[string]struct {
		h     *artifactv1.UploadHeader
		data  []byte
		code  codes.Code
		field string
	}{
		"traversal":        {&artifactv1.UploadHeader{Name: "../../etc/passwd"}, data, codes.InvalidArgument, "header.name"},
		"absolute":         {&artifactv1.UploadHeader{Name: "/etc/passwd"}, data, codes.InvalidArgument, "header.name"},
		"backslash":        {&artifactv1.UploadHeader{Name: `a\..\b`}, data, codes.InvalidArgument, "header.name"},
		"nul":              {&artifactv1.UploadHeader{Name: "a\x00b"}, data, codes.InvalidArgument, "header.name"},
		"control":          {&artifactv1.UploadHeader{Name: "a\x1bb"}, data, codes.InvalidArgument, "header.name"},
		"sha mismatch":     {&artifactv1.UploadHeader{Name: "k", Sha256: digest([]byte("other"))}, data, codes.InvalidArgument, "header.sha256"},
		"bad sha":          {&artifactv1.UploadHeader{Name: "k", Sha256: "xyz"}, data, codes.InvalidArgument, "header.sha256"},
		"short":            {&artifactv1.UploadHeader{Name: "k", Size: 2000}, data, codes.InvalidArgument, "header.size"},
		"long":             {&artifactv1.UploadHeader{Name: "k", Size: 10}, data, codes.InvalidArgument, "header.size"},
		"declared too big": {&artifactv1.UploadHeader{Name: "k", Size: 2 << 20}, data, codes.InvalidArgument, "header.size"},
		"streamed too big": {&artifactv1.UploadHeader{Name: "k"}, randBytes(t, 1<<20+1), codes.InvalidArgument, "chunk"},
		"content type":     {&artifactv1.UploadHeader{Name: "k", ContentType: "a\r\nX-Evil: 1"}, data, codes.InvalidArgument, "header.content_type"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := upload(ctx, in.cli, tc.h, tc.data)
			if status.Code(err) != tc.code || apierr.FieldOf(err) != tc.field {
				t.Fatalf("got %v (field %q), want %v naming %q", err, apierr.FieldOf(err), tc.code, tc.field)
			}
		})
	}
	// Nothing of any of them is stored or left on disk.
	if list, _ := in.cli.List(ctx, &artifactv1.ListRequest{}); len(list.GetArtifacts()) != 0 {
		t.Errorf("stored: %v", list)
	}
	testkit.Eventually(t, "no blobs left", func() bool { return len(blobFiles(t, in.dir)) == 0 })
	for _, n := range []string{"../x", "a/../../b", "/abs"} {
		if _, err := in.cli.Stat(ctx, &artifactv1.StatRequest{Name: n}); apierr.FieldOf(err) != "name" {
			t.Errorf("Stat(%q) = %v, want InvalidArgument naming name", n, err)
		}
	}
}

// TestAbortedUpload cancels an upload in the middle of the stream: nothing is
// stored, the temp file goes, and an older version of the name stays served.
func TestAbortedUpload(t *testing.T) {
	e := storetest.Start(t)
	in := start(t, e, opts{})
	old := mustUpload(t, in, "k", []byte("old kernel"))
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := in.cli.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Name: "k", ReplacesSha256: old.GetSha256()}}})
	stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Chunk{Chunk: randBytes(t, 1<<20)}})
	testkit.Eventually(t, "the upload's temp file", func() bool {
		for _, f := range blobFiles(t, in.dir) {
			if strings.HasPrefix(f, "tmp/") {
				if fi, err := os.Stat(filepath.Join(in.dir, f)); err == nil && fi.Size() > 0 {
					return true
				}
			}
		}
		return false
	})
	cancel()
	testkit.Eventually(t, "the temp file to go", func() bool {
		for _, f := range blobFiles(t, in.dir) {
			if strings.HasPrefix(f, "tmp/") {
				return false
			}
		}
		return true
	})
	resp, body := httpGet(t, in.base+"/artifacts/k", nil)
	if resp.StatusCode != 200 || string(body) != "old kernel" || resp.Header.Get("ETag") != `"`+old.GetSha256()+`"` {
		t.Fatalf("after aborted upload: %d %q", resp.StatusCode, body)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, l := range m.GetLabel() {
				ok = ok || l.GetValue() == label
			}
			if ok {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// TestReplicaPullThrough runs an origin and a replica (one etcd, separate data
// dirs): concurrent requests for content the replica lacks pull it once; content
// the origin corrupted is never served.
func TestReplicaPullThrough(t *testing.T) {
	e := storetest.Start(t)
	origin := start(t, e, opts{site: "hq"})
	replica := start(t, e, opts{site: "edge", origin: origin.srv.GRPCAddr().String()})
	data := randBytes(t, 5<<20)
	a := mustUpload(t, origin, "debian/12/initrd.gz", data)

	const clients = 16
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := replica.base + "/artifacts/debian/12/initrd.gz"
			hdr := map[string]string{}
			if i%2 == 1 {
				hdr["Range"] = "bytes=100-199"
			}
			resp, body := httpGet(t, url, hdr)
			switch {
			case i%2 == 0 && (resp.StatusCode != 200 || !bytes.Equal(body, data)):
				errs <- fmt.Errorf("client %d: %d, %d bytes", i, resp.StatusCode, len(body))
			case i%2 == 1 && (resp.StatusCode != 206 || !bytes.Equal(body, data[100:200])):
				errs <- fmt.Errorf("client %d: %d, %d bytes", i, resp.StatusCode, len(body))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := counter(t, replica.srv.Metrics(), "bootchain_artifactstore_origin_fetches_total", "ok"); n != 1 {
		t.Errorf("replica pulled %v times, want 1", n)
	}
	if n := counter(t, origin.srv.Metrics(), "bootchain_artifactstore_read_streams_total", ""); n != 1 {
		t.Errorf("origin served %v Read streams, want 1", n)
	}
	st, err := replica.cli.Stat(context.Background(), &artifactv1.StatRequest{Name: "debian/12/initrd.gz"})
	if err != nil || !st.GetLocal() {
		t.Errorf("replica stat after pull: %v %v", st, err)
	}
	// Read on the replica (tftpd's path) works from the pulled copy.
	if _, body, err := readAll(t, replica.cli, &artifactv1.ReadRequest{Name: a.GetName()}); err != nil || !bytes.Equal(body, data) {
		t.Errorf("replica Read: %d bytes, %v", len(body), err)
	}

	// Corrupt the origin's copy of a second artifact (same size, one bit flipped).
	bad := randBytes(t, 2<<20)
	b := mustUpload(t, origin, "corrupt.efi", bad)
	p := filepath.Join(origin.dir, "blobs", "sha256", b.GetSha256()[:2], b.GetSha256())
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(bad)
	flipped[12345] ^= 1
	if err := os.WriteFile(p, flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	resp, body := httpGet(t, replica.base+"/artifacts/corrupt.efi", nil)
	if resp.StatusCode != http.StatusBadGateway || bytes.Contains(body, flipped[:64]) || !strings.Contains(string(body), "sha256 mismatch") {
		t.Fatalf("corrupt origin: %d %q", resp.StatusCode, body)
	}
	for _, f := range blobFiles(t, replica.dir) {
		if strings.Contains(f, b.GetSha256()) || strings.HasPrefix(f, "tmp/") {
			t.Errorf("replica kept %s of a corrupt pull", f)
		}
	}
	if n := counter(t, replica.srv.Metrics(), "bootchain_artifactstore_origin_fetches_total", "error"); n != 1 {
		t.Errorf("failed pulls = %v, want 1", n)
	}
}

// TestReplicaSeparateEtcd: a replica whose etcd does not know the artifact learns
// it from the origin.
func TestReplicaSeparateEtcd(t *testing.T) {
	origin := start(t, storetest.Start(t), opts{site: "hq"})
	replica := start(t, storetest.Start(t), opts{
		site: "edge", origin: origin.srv.GRPCAddr().String(),
		// The origin knows the tokens in its own etcd.
		originToken: testkit.Token(t, origin.st, auth.RoleService),
	})
	data := randBytes(t, 100000)
	mustUpload(t, origin, "ipxe.efi", data)
	resp, body := httpGet(t, replica.base+"/artifacts/ipxe.efi", map[string]string{"Range": "bytes=-10"})
	if resp.StatusCode != 206 || !bytes.Equal(body, data[len(data)-10:]) {
		t.Fatalf("replica: %d %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := httpGet(t, replica.base+"/artifacts/missing", nil); resp.StatusCode != 404 {
		t.Errorf("missing on both: %d", resp.StatusCode)
	}
}

// TestReplicaCutOffFromOrigin: with its origin gone (a site cut off from the
// core), a replica serves what it pulled and answers 503 "origin unreachable"
// with Retry-After, not 502, for what it has not.
func TestReplicaCutOffFromOrigin(t *testing.T) {
	origin := start(t, storetest.Start(t), opts{site: "hq"})
	replica := start(t, storetest.Start(t), opts{
		site: "edge", origin: origin.srv.GRPCAddr().String(),
		originToken: testkit.Token(t, origin.st, auth.RoleService),
	})
	cached, later := randBytes(t, 300000), randBytes(t, 1000)
	mustUpload(t, origin, "vmlinuz", cached)
	mustUpload(t, origin, "initrd.gz", later)
	if resp, body := httpGet(t, replica.base+"/artifacts/vmlinuz", nil); resp.StatusCode != 200 || !bytes.Equal(body, cached) {
		t.Fatalf("pull-through: %d, %d bytes", resp.StatusCode, len(body))
	}
	origin.svc.Stop()

	resp, body := httpGet(t, replica.base+"/artifacts/vmlinuz", map[string]string{"Range": "bytes=10-19"})
	if resp.StatusCode != 206 || !bytes.Equal(body, cached[10:20]) {
		t.Errorf("cached artifact with the origin gone: %d, %q", resp.StatusCode, body)
	}
	resp, body = httpGet(t, replica.base+"/artifacts/initrd.gz", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "origin unreachable") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("artifact not yet pulled, origin gone: %d, Retry-After %q, %q; want 503 origin unreachable with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// TestDownloadIsAHop: a GET with ?traceparent= records an "artifact" hop on the
// boot session, with the bytes sent and the ranges.
func TestDownloadIsAHop(t *testing.T) {
	e := storetest.Start(t)
	ctx := context.Background()
	newRec := func(service string) *session.Recorder {
		r, err := session.New(session.Config{Store: e.Client(t), Service: service, Site: "lab", TracerProvider: sdktrace.NewTracerProvider()})
		if err != nil {
			t.Fatal(err)
		}
		testkit.Run(t, service+" sessions", r.Run)
		if err := r.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	dhcp := newRec("dhcpd")
	rec := newRec("artifactstore")
	in := start(t, e, opts{rec: rec})
	data := randBytes(t, 4096)
	mustUpload(t, in, "vmlinuz", data)

	const mac = "52:54:00:aa:bb:cc"
	s := dhcp.Open(ctx, mac, session.OpenOptions{New: true})
	if err := dhcp.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the session in the recorder", func() bool { _, ok := rec.Get(ctx, mac); return ok })

	url := in.base + "/artifacts/vmlinuz?traceparent=" + s.Traceparent()
	if resp, _ := httpGet(t, url, map[string]string{"Range": "bytes=0-99"}); resp.StatusCode != 206 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	if resp, _ := httpGet(t, in.base+"/artifacts/nothere?traceparent="+s.Traceparent(), nil); resp.StatusCode != 404 {
		t.Fatalf("GET missing: %d", resp.StatusCode)
	}
	// A malformed traceparent is ignored: the download still works.
	if resp, _ := httpGet(t, in.base+"/artifacts/vmlinuz?traceparent=garbage", nil); resp.StatusCode != 200 {
		t.Fatalf("GET with bad traceparent: %d", resp.StatusCode)
	}
	// The hop ends after the response is sent: wait until both are recorded.
	var hops []*bootapiv1.Hop
	testkit.Eventually(t, "both artifact hops", func() bool {
		if err := rec.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		bs, found := rec.Get(ctx, mac)
		if !found {
			t.Fatal("no session")
		}
		hops = hops[:0]
		for _, h := range bs.GetHops() {
			if h.GetName() == "artifact" {
				hops = append(hops, h)
			}
		}
		return len(hops) >= 2
	})
	if len(hops) != 2 {
		t.Fatalf("hops %v", hops)
	}
	ok, failed := hops[0], hops[1]
	if ok.GetFailed() || ok.GetBytes() != 100 || ok.GetService() != "artifactstore" || !strings.HasPrefix(ok.GetDetail(), "vmlinuz 206") ||
		ok.GetAttributes()["bootchain.ranges"] != "bytes=0-99" || ok.GetDuration() == nil {
		t.Errorf("download hop: %v", ok)
	}
	if !failed.GetFailed() || !strings.Contains(failed.GetDetail(), "nothere 404") {
		t.Errorf("failed hop: %v", failed)
	}
	// A 404 ends the boot: the hop says why and the session fails at once
	// (bootapi's diagnosis reads both).
	if failed.GetAttributes()[diagnose.AttrArtifactFailure] != diagnose.FailureNotFound {
		t.Errorf("failed hop attributes: %v", failed.GetAttributes())
	}
	if bs, _ := rec.Get(ctx, mac); bs.GetState() != bootapiv1.SessionState_SESSION_STATE_FAILED || bs.GetFailedHop() != "artifact" {
		t.Errorf("session after the 404: %v at %q", bs.GetState(), bs.GetFailedHop())
	}
}

// TestReplicaPullRetriesBrokenOrigin: the replica's first connection to the
// origin breaks (here: closed as soon as it is accepted, as a middlebox that
// dropped an idle connection would); the pull tries again on a new one and the
// machine's download succeeds.
func TestReplicaPullRetriesBrokenOrigin(t *testing.T) {
	e := storetest.Start(t)
	origin := start(t, e, opts{site: "hq"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if n == 0 {
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", origin.srv.GRPCAddr().String())
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	replica := start(t, e, opts{site: "edge", origin: ln.Addr().String()})
	data := randBytes(t, 1<<20)
	mustUpload(t, origin, "retry/vmlinuz", data)
	resp, body := httpGet(t, replica.base+"/artifacts/retry/vmlinuz", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("download through a replica whose origin connection broke: %d, %s", resp.StatusCode, body)
	}
	if n := counter(t, replica.srv.Metrics(), "bootchain_artifactstore_origin_fetches_total", "ok"); n != 1 {
		t.Errorf("pulls ok = %v, want 1", n)
	}
}
