package diagnose

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// hop is a hop n seconds into the boot, lasting a second.
func hop(n int, name, service string, failed bool, detail string, attrs ...string) *bootapiv1.Hop {
	h := &bootapiv1.Hop{
		Name: name, Service: service, Failed: failed, Detail: detail,
		StartTime: timestamppb.New(t0.Add(time.Duration(n) * time.Second)), Duration: durationpb.New(time.Second),
	}
	if len(attrs) > 0 {
		h.Attributes = map[string]string{}
		for i := 0; i+1 < len(attrs); i += 2 {
			h.Attributes[attrs[i]] = attrs[i+1]
		}
	}
	return h
}

var (
	discover = hop(0, "dhcp.discover", "dhcpd", false, "offer 198.18.0.50", AttrClientArch, "0")
	request  = hop(1, "dhcp.request", "dhcpd", false, "ack 198.18.0.50", AttrClientArch, "0")
	tftpOK   = hop(2, "tftp", "tftpd", false, "undionly.kpxe", "tftp.file", "undionly.kpxe", AttrTFTPOutcome, "succeeded", AttrFileArch, ArchBIOS)
	ipxeDHCP = hop(3, "ipxe.dhcp", "dhcpd", false, "ack 198.18.0.50", AttrClientArch, "0")
	script   = hop(4, "script", "bootapi", false, "job j1: profile debian")
	kernel   = hop(5, "artifact", "artifactstore", false, "vmlinuz 200 1000B")
	initrd   = hop(6, "artifact", "artifactstore", false, "initrd 200 1000B")
)

func TestOf(t *testing.T) {
	tm := Timeouts{Offer: 10 * time.Second, IPXE: 20 * time.Second, Script: 30 * time.Second, Download: 40 * time.Second, Other: 50 * time.Second}
	type want struct {
		class   bootapiv1.DiagnosisClass
		hop     string
		service string
		cause   string // a part of the cause
	}
	for name, tc := range map[string]struct {
		hops      []*bootapiv1.Hop
		state     bootapiv1.SessionState
		failedHop string        // where a service ended the boot
		at        time.Duration // after the boot's start
		want      *want
	}{
		"boot program refused, the firmware started over": {
			hops:  []*bootapiv1.Hop{discover, request, tftpOK, hop(3, "dhcp.discover", "dhcpd", false, "offer 198.18.0.50")},
			state: bootapiv1.SessionState_SESSION_STATE_FAILED, failedHop: "tftp", at: 4 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_REFUSED, "tftp", "tftpd", "undionly.kpxe and did not run it"},
		},
		"offer ignored": {
			hops: []*bootapiv1.Hop{discover}, at: 12 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OFFER_IGNORED, "dhcp.discover", "dhcpd", "offer 198.18.0.50"},
		},
		"offer not yet ignored": {hops: []*bootapiv1.Hop{discover}, at: 5 * time.Second},
		"boot file not found": {
			hops: []*bootapiv1.Hop{discover, request, hop(2, "tftp", "tftpd", true, "nope.efi: file not found", "tftp.file", "nope.efi", AttrTFTPOutcome, OutcomeNotFound)},
			at:   4 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_NOT_FOUND, "tftp", "tftpd", "nope.efi"},
		},
		"boot file not found, then found": {
			hops: []*bootapiv1.Hop{discover, request, hop(2, "tftp", "tftpd", true, "nope.efi:", AttrTFTPOutcome, OutcomeNotFound), tftpOK, ipxeDHCP},
			at:   5 * time.Second,
		},
		"tftp stalled": {
			hops: []*bootapiv1.Hop{discover, request, hop(2, "tftp", "tftpd", true, "undionly.kpxe: no ACK", "tftp.file", "undionly.kpxe", AttrTFTPOutcome, OutcomeTimedOut, AttrTFTPBlock, "17")},
			at:   4 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_TFTP_STALLED, "tftp", "tftpd", "block 17"},
		},
		"uefi size probe is not a stall": {
			hops: []*bootapiv1.Hop{discover, request, hop(2, "tftp", "tftpd", true, "ipxe.efi: aborted", AttrTFTPOutcome, "aborted by client")},
			at:   4 * time.Second,
		},
		"wrong arch": {
			hops: []*bootapiv1.Hop{
				hop(0, "dhcp.discover", "dhcpd", false, "offer 198.18.0.50", AttrClientArch, "7"),
				hop(1, "dhcp.request", "dhcpd", false, "ack 198.18.0.50", AttrClientArch, "7"),
				tftpOK,
			},
			at:   30 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_WRONG_ARCH, "tftp", "tftpd", "built for bios"},
		},
		"boot file sent, nothing after": {
			hops: []*bootapiv1.Hop{discover, request, tftpOK}, at: 30 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_REFUSED, "tftp", "tftpd", "downloaded the boot file undionly.kpxe and did not run it"},
		},
		"HTTP boot program downloaded, nothing after": {
			hops: []*bootapiv1.Hop{discover, request, func() *bootapiv1.Hop {
				h := hop(2, "artifact", "artifactstore", false, "site/snponly.efi 200 173792B")
				h.Bytes = 173792
				return h
			}()}, at: 3 * time.Minute,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_REFUSED, "artifact", "artifactstore", "site/snponly.efi"},
		},
		"kernel downloaded, nothing after": {
			hops: []*bootapiv1.Hop{discover, request, tftpOK, ipxeDHCP, func() *bootapiv1.Hop {
				h := hop(5, "artifact", "artifactstore", false, "e2e/vmlinuz 200 8000000B")
				h.Bytes = 8000000
				return h
			}()}, at: 11 * time.Minute,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_NO_CALLBACK, "artifact", "artifactstore", "e2e/vmlinuz"},
		},
		"chain-load loop": {
			hops: []*bootapiv1.Hop{discover, request, tftpOK, ipxeDHCP, hop(5, "tftp", "tftpd", false, "undionly.kpxe", "tftp.file", "undionly.kpxe"), ipxeDHCP,
				func() *bootapiv1.Hop {
					h := hop(8, "tftp", "tftpd", false, "undionly.kpxe", "tftp.file", "undionly.kpxe")
					h.Repeats = 1
					return h
				}(), ipxeDHCP},
			at:   9 * time.Second, // not idle: a loop never is
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_SCRIPT_NOT_FETCHED, "tftp", "tftpd", "sent 4 times"},
		},
		"boot file fetched twice is no loop": {
			hops: []*bootapiv1.Hop{discover, request, tftpOK, ipxeDHCP, hop(5, "tftp", "tftpd", false, "undionly.kpxe", "tftp.file", "undionly.kpxe"), ipxeDHCP},
			at:   7 * time.Second,
		},
		"a script between boot files is no loop": {
			hops: []*bootapiv1.Hop{tftpOK, tftpOK, script, tftpOK, ipxeDHCP},
			at:   7 * time.Second,
		},
		"script not fetched": {
			hops: []*bootapiv1.Hop{discover, request, tftpOK, ipxeDHCP}, at: 30 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_SCRIPT_NOT_FETCHED, "ipxe.dhcp", "dhcpd", "never asked for its script"},
		},
		"script fetched within its timeout": {hops: []*bootapiv1.Hop{discover, request, tftpOK, ipxeDHCP, script}, at: 20 * time.Second},
		"kernel not fetched": {
			hops: []*bootapiv1.Hop{discover, request, tftpOK, ipxeDHCP, script}, at: 40 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_KERNEL_NOT_FETCHED, "script", "bootapi", "no kernel download"},
		},
		"artifact not found": {
			hops: []*bootapiv1.Hop{script, hop(5, "artifact", "artifactstore", true, "vmlinuz 404 0B Not Found", AttrArtifactFailure, FailureNotFound)},
			at:   6 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND, "artifact", "artifactstore", "vmlinuz answered 404"},
		},
		"artifact not found, then downloaded": {
			hops: []*bootapiv1.Hop{script, hop(5, "artifact", "artifactstore", true, "vmlinuz 404 0B", AttrArtifactFailure, FailureNotFound), kernel},
			at:   7 * time.Second,
		},
		"artifact checksum": {
			hops: []*bootapiv1.Hop{script, kernel, hop(6, "artifact", "artifactstore", true, "initrd 409 0B artifact initrd was replaced", AttrArtifactFailure, FailureChecksum)},
			at:   7 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_CHECKSUM, "artifact", "artifactstore", "initrd did not match its checksum: artifact initrd was replaced"},
		},
		"no callback": {
			hops: []*bootapiv1.Hop{script, kernel, initrd}, at: 50 * time.Second,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_NO_CALLBACK, "artifact", "artifactstore", "no installer callback"},
		},
		"downloads done, callback not yet due": {hops: []*bootapiv1.Hop{script, kernel, initrd}, at: 30 * time.Second},
		"installer running": {
			hops: []*bootapiv1.Hop{script, kernel, initrd, hop(7, "callback", "bootapi", false, "running: ", AttrReportState, "running")},
			at:   time.Hour,
		},
		"installer failed": {
			hops: []*bootapiv1.Hop{script, kernel, initrd, hop(7, "callback", "bootapi", false, "running: "), hop(8, "callback", "bootapi", false, "failed: disk sda not found", AttrReportState, "failed")},
			at:   9 * time.Second, state: bootapiv1.SessionState_SESSION_STATE_FAILED,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_INSTALLER_FAILED, "callback", "bootapi", "disk sda not found"},
		},
		"installer succeeded": {
			hops:  []*bootapiv1.Hop{script, kernel, initrd, hop(8, "callback", "bootapi", false, "succeeded: ", AttrReportState, "succeeded")},
			state: bootapiv1.SessionState_SESSION_STATE_SUCCEEDED, at: time.Hour,
		},
		"acked, no boot file asked for": {
			hops: []*bootapiv1.Hop{discover, request}, at: time.Minute,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER, "dhcp.request", "dhcpd", "asked tftpd for no boot file"},
		},
		"another failure": {
			hops: []*bootapiv1.Hop{script, hop(5, "artifact", "artifactstore", true, "vmlinuz 502 0B origin down")}, at: time.Minute,
			want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER, "artifact", "artifactstore", "origin down"},
		},
		"no hops": {at: time.Minute, want: &want{bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER, "", "", "no service recorded a hop"}},
	} {
		t.Run(name, func(t *testing.T) {
			state := tc.state
			if state == bootapiv1.SessionState_SESSION_STATE_UNSPECIFIED {
				state = bootapiv1.SessionState_SESSION_STATE_ACTIVE
			}
			bs := &bootapiv1.BootSession{Mac: "52:54:00:00:00:01", State: state, FailedHop: tc.failedHop, StartTime: timestamppb.New(t0), Hops: tc.hops}
			d := Of(bs, t0.Add(tc.at), tm)
			if tc.want == nil {
				if d != nil {
					t.Fatalf("Of = %v, want none", d)
				}
				return
			}
			if d == nil {
				t.Fatalf("Of = nil, want %v", tc.want.class)
			}
			got := want{d.GetClass(), d.GetHop(), d.GetService(), tc.want.cause}
			if diff := cmp.Diff(*tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("diagnosis (-want +got):\n%s", diff)
			}
			if !strings.Contains(d.GetCause(), tc.want.cause) {
				t.Errorf("cause %q does not say %q", d.GetCause(), tc.want.cause)
			}
			if d.GetNextStep() == "" || !d.GetTime().AsTime().Equal(t0.Add(tc.at)) {
				t.Errorf("next step %q, time %v", d.GetNextStep(), d.GetTime().AsTime())
			}
		})
	}
}

// pe is the start of a PE/COFF image for machine.
func pe(machine uint16) []byte {
	b := make([]byte, 0x100)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x84:], machine)
	return b
}

func TestFileArch(t *testing.T) {
	for name, tc := range map[string]struct {
		head []byte
		want string
	}{
		"pxe nbp":            {[]byte{0xeb, 0x3c, 0x90, 0x00}, ArchBIOS},
		"efi x86_64":         {pe(0x8664), ArchEFIX64},
		"efi ia32":           {pe(0x14c), ArchEFIIA32},
		"efi arm64":          {pe(0xaa64), ArchEFIARM64},
		"mz without pe":      {append([]byte("MZ"), make([]byte, 0x100)...), ArchBIOS},
		"too short":          {[]byte("M"), ""},
		"pe offset past end": {func() []byte { b := pe(0x8664); binary.LittleEndian.PutUint32(b[0x3c:], 0xffffffff); return b }(), ""},
	} {
		t.Run(name, func(t *testing.T) {
			if got := FileArch(tc.head); got != tc.want {
				t.Errorf("FileArch = %q, want %q", got, tc.want)
			}
		})
	}
}

func FuzzFileArch(f *testing.F) {
	f.Add(pe(0x8664))
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, head []byte) {
		FileArch(head)
	})
}

func TestMessage(t *testing.T) {
	d := &bootapiv1.Diagnosis{Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND, Hop: "artifact", Cause: "artifact x answered 404"}
	if got, want := Message(d), "artifact_not_found at artifact: artifact x answered 404"; got != want {
		t.Errorf("Message = %q, want %q", got, want)
	}
}

// BenchmarkOf diagnoses a session with the most hops one keeps (a machine
// looping on its script): what the sweep pays per session it reads, beside
// the etcd read of the hops.
func BenchmarkOf(b *testing.B) {
	hops := []*bootapiv1.Hop{discover, request, tftpOK, ipxeDHCP}
	for i := len(hops); i < 200; i++ {
		hops = append(hops, hop(i, "script", "bootapi", false, "menu"))
	}
	bs := &bootapiv1.BootSession{State: bootapiv1.SessionState_SESSION_STATE_ACTIVE, StartTime: timestamppb.New(t0), Hops: hops}
	now, tm := t0.Add(time.Hour), DefaultTimeouts()
	b.ReportAllocs()
	for b.Loop() {
		if Of(bs, now, tm) == nil {
			b.Fatal("no diagnosis")
		}
	}
}
