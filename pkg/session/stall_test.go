package session_test

import (
	"context"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestStallAfterBootProgram: a session that went quiet right after the firmware
// downloaded its boot program (the program never asked for anything: Secure Boot
// refused it) ends failed at that hop, naming the file; quiet after anything else
// is a stall.
func TestStallAfterBootProgram(t *testing.T) {
	type hop struct {
		name, detail string
		bytes        int64
	}
	for name, tc := range map[string]struct {
		hops      []hop
		state     bootapiv1.SessionState
		failedHop string
		message   string
	}{
		"tftp then nothing": {
			hops:  []hop{{"dhcp.discover", "offer", 0}, {"tftp", "snponly.efi", 173792}},
			state: bootapiv1.SessionState_SESSION_STATE_FAILED, failedHop: "tftp",
			message: "the firmware downloaded snponly.efi and did not run it",
		},
		"http boot file then nothing": {
			hops:  []hop{{"dhcp.request", "ack", 0}, {"artifact", "snponly.efi 200 173792B", 173792}},
			state: bootapiv1.SessionState_SESSION_STATE_FAILED, failedHop: "artifact",
			message: "Secure Boot",
		},
		"kernel then nothing": {
			hops:  []hop{{"script", "job", 850}, {"artifact", "e2e/initrd.gz 200 1276598B", 1276598}},
			state: bootapiv1.SessionState_SESSION_STATE_STALLED, failedHop: "artifact",
			message: "no progress",
		},
		"iPXE ran": {
			hops:  []hop{{"tftp", "snponly.efi", 173792}, {"ipxe.dhcp", "ack", 0}},
			state: bootapiv1.SessionState_SESSION_STATE_STALLED, failedHop: "ipxe.dhcp",
			message: "no progress",
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := storetest.Start(t)
			r := newRecorder(t, e.Client(t), "tftpd", nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			const mac = "52:54:00:12:34:57"
			s := r.Open(ctx, mac, session.OpenOptions{New: true})
			for _, h := range tc.hops {
				_, hp := s.StartHop(ctx, h.name)
				hp.SetDetail(h.detail)
				hp.SetBytes(h.bytes)
				hp.End()
			}
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			for r.MarkStalled(ctx, time.Second, time.Now().Add(time.Minute)) == 0 {
				select {
				case <-ctx.Done():
					t.Fatal("nothing marked")
				case <-time.After(10 * time.Millisecond):
				}
			}
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got, ok := r.Get(ctx, mac)
			if !ok {
				t.Fatal("no session")
			}
			if got.GetState() != tc.state || got.GetFailedHop() != tc.failedHop || !strings.Contains(got.GetMessage(), tc.message) {
				t.Errorf("state %v hop %q message %q; want %v at %q with %q", got.GetState(), got.GetFailedHop(), got.GetMessage(), tc.state, tc.failedHop, tc.message)
			}
		})
	}
}
