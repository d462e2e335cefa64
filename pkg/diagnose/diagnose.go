// Package diagnose names why a boot failed or stalled, from the hops its
// services recorded: the hop where it stopped, the likely cause and a next
// step. The rules are pure (a session's hops and a clock in, a Diagnosis out),
// so bootapi's diagnoser, bootctl and the tests all read a boot the same way.
//
//	d := diagnose.Of(session, time.Now(), diagnose.DefaultTimeouts())
//	if d != nil { // failed, or stalled past its class's timeout
//		fmt.Println(d.GetHop(), d.GetCause(), d.GetNextStep())
//	}
package diagnose

import (
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Hop attributes the rules read. The services that record the hops set them.
const (
	// AttrClientArch is the client architecture (DHCP option 93, decimal) on
	// dhcpd's hops.
	AttrClientArch = "dhcp.client_arch"
	// AttrTFTPOutcome is how a TFTP transfer ended (tftpd): succeeded, not
	// found, timed out, aborted by client, ...
	AttrTFTPOutcome = "tftp.outcome"
	// AttrTFTPBlock is the block a timed-out transfer was waiting on.
	AttrTFTPBlock = "tftp.block"
	// AttrFileArch is what the boot file sent is built for (FileArch).
	AttrFileArch = "tftp.file_arch"
	// AttrArtifactFailure says why a download failed (artifactstore):
	// FailureNotFound or FailureChecksum.
	AttrArtifactFailure = "bootchain.failure"
	// AttrReportState is the state an installer reported (bootapi's callback
	// hop): running, succeeded, failed.
	AttrReportState = "bootchain.report_state"
)

// Values of AttrArtifactFailure and AttrTFTPOutcome the rules match.
const (
	FailureNotFound = "not_found"
	FailureChecksum = "checksum"
	OutcomeNotFound = "not found"
	OutcomeTimedOut = "timed out"
)

// Timeouts are how long a boot may sit at each stage before it counts as
// stalled there.
type Timeouts struct {
	// Offer: an OFFER went out and no REQUEST came.
	Offer time.Duration
	// IPXE: the boot file was sent, or iPXE's DHCP seen, and no script asked for.
	IPXE time.Duration
	// Script: a kernel boot's script was served and no kernel download followed.
	Script time.Duration
	// Download: the downloads finished and no installer callback came.
	Download time.Duration
	// Other: any other stage.
	Other time.Duration
}

// DefaultTimeouts: a firmware that takes the offer asks within seconds; a
// kernel and initrd boot to the installer's first report within minutes.
func DefaultTimeouts() Timeouts {
	return Timeouts{Offer: time.Minute, IPXE: 2 * time.Minute, Script: 2 * time.Minute, Download: 10 * time.Minute, Other: 5 * time.Minute}
}

// Min is the shortest of t's timeouts: nothing stalls sooner.
func (t Timeouts) Min() time.Duration {
	return min(t.Offer, t.IPXE, t.Script, t.Download, t.Other)
}

// Of diagnoses bs (with its hops, oldest first) at now. It returns nil while
// the boot goes on within its stage's timeout, and for a boot that succeeded
// or whose installer is running (its job's deadline covers that).
func Of(bs *bootapiv1.BootSession, now time.Time, t Timeouts) *bootapiv1.Diagnosis {
	hops := meaningful(bs.GetHops())
	if bs.GetState() == bootapiv1.SessionState_SESSION_STATE_FAILED && bs.GetFailedHop() != "" {
		// A service ended the boot at that hop; what came after (dhcpd keeps
		// a firmware's retry in the boot it failed) does not explain it.
		for i := len(hops) - 1; i >= 0; i-- {
			if hops[i].GetName() == bs.GetFailedHop() {
				hops = hops[:i+1]
				break
			}
		}
	}
	if d := failed(hops); d != nil {
		return stamp(d, now)
	}
	if bs.GetState() == bootapiv1.SessionState_SESSION_STATE_SUCCEEDED {
		return nil
	}
	if len(hops) == 0 {
		if start := bs.GetStartTime(); start != nil && now.Sub(start.AsTime()) >= t.Other {
			return stamp(&bootapiv1.Diagnosis{
				Class:    bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER,
				Cause:    "the session opened but no service recorded a hop of it",
				NextStep: "check that the services share one etcd and that the machine's requests reach them",
			}, now)
		}
		return nil
	}
	if d := looping(hops); d != nil {
		return stamp(d, now)
	}
	d, after := stalled(hops, t)
	// A session a service already ended (dhcpd: the firmware started over after
	// its boot program) needs no timeout to pass.
	failedNow := bs.GetState() == bootapiv1.SessionState_SESSION_STATE_FAILED
	if d == nil || (!failedNow && now.Sub(end(hops[len(hops)-1])) < after) {
		return nil
	}
	return stamp(d, now)
}

// Failing reports whether d's class ends a boot at once (a download refused, the
// installer's failure) rather than after a stage's timeout.
func Failing(d *bootapiv1.Diagnosis) bool {
	switch d.GetClass() {
	case bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_CHECKSUM,
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_INSTALLER_FAILED, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_NOT_FOUND,
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_TFTP_STALLED, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_REFUSED:
		return true
	}
	return false
}

// Message is the one line a job or session carries for d.
func Message(d *bootapiv1.Diagnosis) string {
	cls := ClassName(d.GetClass())
	if d.GetHop() == "" {
		return cls + ": " + d.GetCause()
	}
	return cls + " at " + d.GetHop() + ": " + d.GetCause()
}

func stamp(d *bootapiv1.Diagnosis, now time.Time) *bootapiv1.Diagnosis {
	d.Time = timestamppb.New(now)
	return d
}

// end is when h ended, its last repeat included.
func end(h *bootapiv1.Hop) time.Time {
	e := h.GetStartTime().AsTime().Add(h.GetDuration().AsDuration())
	if lr := h.GetLastRepeatTime(); lr != nil && lr.AsTime().After(e) {
		e = lr.AsTime()
	}
	return e
}

// meaningful drops hops that say nothing about where a boot stands: UEFI
// firmware's TFTP size probe, which it aborts itself before the real transfer.
func meaningful(hops []*bootapiv1.Hop) []*bootapiv1.Hop {
	out := make([]*bootapiv1.Hop, 0, len(hops))
	for _, h := range hops {
		if h.GetName() == "tftp" && h.GetAttributes()[AttrTFTPOutcome] == "aborted by client" && h.GetBytes() == 0 {
			continue
		}
		out = append(out, h)
	}
	return out
}
