package bootapi_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
)

// TestJobOverIPv6: a machine whose DHCPv6 lease (leases6/) is held by the
// address it asks from gets its job, over IPv6, with every URL of the script
// on bootapi's IPv6 address, and the job is dispatched to that address.
func TestJobOverIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	st := storetest.New(t)
	h := start(t, st, func(c *bootapi.Config) { c.HTTPAddr, c.Advertise6 = "[::1]:0", "fd00:bc::1" })
	h.seed(t)
	ctx := context.Background()
	if _, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: mac, Hostname: "node0"}}); err != nil {
		t.Fatal(err)
	}
	rev, err := st.Put(ctx, store.Key("leases6", "default", "::1"), leaseOf(mac, "::1", time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.srv.WaitLeases6(ctx, rev); err != nil {
		t.Fatal(err)
	}
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	code, body := h.getFrom(t, "::1", "/ipxe/v1/config?mac="+mac)
	if code != 200 || !strings.Contains(body, "kernel http://[fd00:bc::1]:8081/artifacts/debian/linux?traceparent=") {
		t.Fatalf("job script over IPv6: %d\n%s", code, body)
	}
	port := h.srv.HTTPAddr().(*net.TCPAddr).Port
	if want := fmt.Sprintf("bootchain.callback=http://[fd00:bc::1]:%d/ipxe/v1/report", port); !strings.Contains(body, want) {
		t.Errorf("script lacks %q:\n%s", want, body)
	}
	if strings.Contains(body, "198.18.") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("an IPv4 URL in the IPv6 client's script:\n%s", body)
	}
	if j := getJob(t, h, jr.GetJob().GetId()); j.GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED || j.GetDispatchIp() != "::1" {
		t.Fatalf("job %v dispatched to %q, want dispatched to ::1", j.GetState(), j.GetDispatchIp())
	}
}
