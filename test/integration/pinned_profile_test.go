package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/bootapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var kernelURL = regexp.MustCompile(`(?m)^kernel (\S+)`)

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPinnedProfileNeverBootsAReplacement: a profile pinned to a kernel's digest
// renders a URL artifactstore serves while the name holds that content, and
// answers 409 once the kernel is replaced: the machine does not boot the new
// kernel. A pin the artifact does not match cannot be written.
func TestPinnedProfileNeverBootsAReplacement(t *testing.T) {
	etcd := storetest.Start(t)
	acfg := artifactstore.DefaultConfig()
	acfg.Store, acfg.HTTPAddr, acfg.DataDir, acfg.Logger = etcd.Client(t), "127.0.0.1:0", t.TempDir(), discard()
	acfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	asrv, err := artifactstore.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "artifactstore", asrv.Run)
	abase := "http://" + asrv.HTTPAddr().String()
	testkit.WaitHTTP(t, abase+"/healthz")

	bcfg := bootapi.DefaultConfig()
	bcfg.Store, bcfg.HTTPAddr, bcfg.Logger, bcfg.ArtifactURL = etcd.Client(t), "127.0.0.1:0", discard(), abase
	bcfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	bsrv, err := bootapi.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "bootapi", bsrv.Run)
	bbase := "http://" + bsrv.HTTPAddr().String()
	testkit.WaitHTTP(t, bbase+"/healthz")

	tok := grpcclient.WithToken(testkit.AdminToken(t, etcd.Client(t)))
	acc, err := grpcclient.Dial(asrv.GRPCAddr().String(), tlsconf.Files{}, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	bcc, err := grpcclient.Dial(bsrv.GRPCAddr().String(), tlsconf.Files{}, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer bcc.Close()
	arts := artifactstorev1.NewArtifactServiceClient(acc)
	profiles, machines := bootapiv1.NewProfileServiceClient(bcc), bootapiv1.NewMachineServiceClient(bcc)
	ctx := context.Background()
	upload := func(name, content, replaces string) string {
		t.Helper()
		stream, err := arts.Upload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Header{Header: &artifactstorev1.UploadHeader{Name: name, ReplacesSha256: replaces}}})
		stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Chunk{Chunk: []byte(content)}})
		r, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
		return r.GetArtifact().GetSha256()
	}
	old := upload("debian/linux", "the kernel the profile was tested with", "")
	ref := func(s string) *bootapiv1.ArtifactRef {
		return &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: s}}
	}
	wrong := sha256.Sum256([]byte("other"))
	_, err = profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "bad-pin", Kernel: ref("debian/linux@sha256:" + hex.EncodeToString(wrong[:]))}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), old) {
		t.Fatalf("profile pinned to other content: %v", err)
	}
	if _, err := profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "pinned", Kernel: ref("debian/linux@sha256:" + old), Cmdline: "console=ttyS0"}}); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:aa:bb:01"
	if _, err := machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: mac, DefaultAction: bootapiv1.Action_ACTION_PROFILE, DefaultProfile: "pinned"}}); err != nil {
		t.Fatal(err)
	}
	kernel := func() string {
		t.Helper()
		code, script := fetch(t, bbase+"/ipxe/v1/config?mac="+mac)
		m := kernelURL.FindStringSubmatch(script)
		if code != 200 || m == nil {
			t.Fatalf("script: %d\n%s", code, script)
		}
		return m[1]
	}
	u := kernel()
	if !strings.Contains(u, "sha256="+old) {
		t.Fatalf("kernel URL %s does not carry the pin", u)
	}
	if code, body := fetch(t, u); code != 200 || body != "the kernel the profile was tested with" {
		t.Fatalf("pinned kernel: %d %q", code, body)
	}

	upload("debian/linux", "a replacement nobody tested", old)
	code, body := fetch(t, kernel())
	if code != http.StatusConflict || strings.Contains(body, "nobody tested") || !strings.Contains(body, old) {
		t.Fatalf("pinned kernel after the replacement: %d %q", code, body)
	}
}
