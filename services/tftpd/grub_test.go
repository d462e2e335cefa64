package tftpd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/grub"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/bootapi"
	"github.com/bootchain/bootchain/services/tftpd"
	"github.com/bootchain/bootchain/services/tftpd/internal/tftptest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestGrubOverTFTP: GRUB's names through a real tftpd and a real bootapi.
// grub/grub.cfg is the bootstrap; grub/grub.cfg-<mac> is bootapi's config for
// the machine, asked with tftpd's service token as the machine at the
// client's address (which holds its lease: the job is dispatched);
// artifacts/<name> serves the kernel, and a pin that does not match is
// refused. Without a service credential bootapi answers nothing.
func TestGrubOverTFTP(t *testing.T) {
	st := storetest.New(t)
	arts := tftptest.StartArtifacts(t, st)
	kernel := arts.Put("debian/linux", []byte("a kernel"))
	arts.Put("debian/initrd.gz", []byte("an initrd"))

	bcfg := bootapi.DefaultConfig()
	bcfg.Store, bcfg.HTTPAddr, bcfg.GRPC = st, "127.0.0.1:0", grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	bcfg.ArtifactURL, bcfg.Logger = "http://198.18.0.1:8081", testLogger(t)
	b, err := bootapi.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "bootapi", b.Run)
	testkit.WaitHTTP(t, "http://"+b.HTTPAddr().String()+"/healthz")
	cc, err := grpcclient.Dial(b.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(t, st)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx := context.Background()
	const mac = "52:54:00:aa:bb:cc"
	if _, err := bootapiv1.NewProfileServiceClient(cc).CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
		Name: "debian-12", Kernel: &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "debian/linux"}},
		Initrds: []*bootapiv1.ArtifactRef{{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "debian/initrd.gz"}}}, Cmdline: "console=ttyS0",
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bootapiv1.NewMachineServiceClient(cc).RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: mac}}); err != nil {
		t.Fatal(err)
	}
	jr, err := bootapiv1.NewJobServiceClient(cc).CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Put(ctx, store.Key("leases", "default", "127.0.0.1"),
		&dhcpdv1.Lease{Ip: "127.0.0.1", Mac: mac, State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, Site: "default", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WaitLeases(ctx, rev); err != nil {
		t.Fatal(err)
	}

	// Without a service credential: nothing.
	anon := newEnvWith(t, st, arts.Addr(), func(c *tftpd.Config) { c.BootAPI = b.GRPCAddr().String() })
	if _, _, err := get(anon.addr(), grub.ConfigName(mac), 512, false); err == nil {
		t.Fatal("a tftpd without credentials got a config")
	}
	e := newEnvWith(t, st, arts.Addr(), func(c *tftpd.Config) {
		c.BootAPI, c.BootAPIToken = b.GRPCAddr().String(), testkit.Token(t, st, auth.RoleService)
	})
	mustGet(t, e.addr(), "grub/grub.cfg", []byte(grub.Bootstrap()))
	cfg, _, err := get(e.addr(), grub.ConfigName(mac), 512, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"if linux '(tftp)/artifacts/debian/linux' 'console=ttyS0'", "'bootchain.job=" + jr.GetJob().GetId() + "'", "'bootchain.token="} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	j, err := bootapiv1.NewJobServiceClient(cc).GetJob(ctx, &bootapiv1.GetJobRequest{Id: jr.GetJob().GetId()})
	if err != nil || j.GetJob().GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatalf("job after the config: %v %v", j.GetJob().GetState(), err)
	}
	mustGet(t, e.addr(), "artifacts/debian/linux", []byte("a kernel"))
	mustGet(t, e.addr(), "artifacts/debian/linux@sha256:"+kernel, []byte("a kernel"))
	if _, _, err := get(e.addr(), "artifacts/debian/linux@sha256:"+strings.Repeat("ab", 32), 512, false); err == nil {
		t.Fatal("content other than the pin names was served")
	}
	if _, _, err := get(e.addr(), "grub/x86_64-efi/command.lst", 512, false); err == nil {
		t.Fatal("a name outside the chain was served")
	}
}
