package integration

import (
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/bootapi"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/services/tftpd"
)

// startFour runs the four services on loopback over one embedded etcd until
// the test ends, and returns each one's HTTP address (its /metrics), once
// each says it is ready, and tftpd's TFTP address.
func startFour(t *testing.T) (targets map[string]string, tftp string) {
	t.Helper()
	etcd := storetest.Start(t)
	grpc := func() grpcserver.Config { return grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second} }

	acfg := artifactstore.DefaultConfig()
	acfg.Store, acfg.HTTPAddr, acfg.DataDir, acfg.Logger, acfg.GRPC = etcd.Client(t), "127.0.0.1:0", t.TempDir(), discard(), grpc()
	asrv, err := artifactstore.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "artifactstore", asrv.Run)

	bcfg := bootapi.DefaultConfig()
	bcfg.Store, bcfg.HTTPAddr, bcfg.Logger, bcfg.GRPC = etcd.Client(t), "127.0.0.1:0", discard(), grpc()
	bsrv, err := bootapi.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "bootapi", bsrv.Run)

	tcfg := tftpd.DefaultConfig()
	tcfg.Addr, tcfg.GRPC, tcfg.HTTPAddr, tcfg.ArtifactStore = "127.0.0.1:0", grpc(), "127.0.0.1:0", asrv.GRPCAddr().String()
	tcfg.DataDir, tcfg.Store, tcfg.Logger, tcfg.Warm = t.TempDir(), etcd.Client(t), discard(), false
	tsrv, err := tftpd.New(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "tftpd", tsrv.Run)

	// No interface: relayed traffic only, on loopback; enough to be scraped.
	dcfg := dhcpd.DefaultConfig()
	dcfg.Store, dcfg.Logger, dcfg.Name = etcd.Client(t), discard(), "prom"
	dcfg.ListenAddr, dcfg.PXEAddr, dcfg.GRPC, dcfg.HTTPAddr = "127.0.0.1:0", "-", grpc(), "127.0.0.1:0"
	dsrv, err := dhcpd.New(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "dhcpd", dsrv.Run)

	targets = map[string]string{
		"artifactstore": asrv.HTTPAddr().String(), "bootapi": bsrv.HTTPAddr().String(),
		"tftpd": tsrv.HTTPAddr().String(), "dhcpd": dsrv.HTTPAddr().String(),
	}
	for _, addr := range targets {
		testkit.WaitHTTP(t, "http://"+addr+"/healthz")
		testkit.WaitHTTP(t, "http://"+addr+"/readyz")
	}
	return targets, tsrv.Addr().String()
}
