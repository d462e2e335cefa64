package session

import (
	"context"
	"fmt"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// bootProgram reports whether hop is a completed download of a boot program by the
// firmware: a TFTP transfer, or an HTTP download of an EFI binary (UEFI HTTP
// boot). A boot program that runs asks for something next (iPXE's DHCP, GRUB's
// config) within seconds; a firmware that starts over instead never ran it, as
// OVMF does with an unsigned or tampered binary under Secure Boot
// (docs/firmware.md).
func bootProgram(hop *bootapiv1.Hop) (string, bool) {
	file, _, _ := strings.Cut(hop.GetDetail(), " ")
	switch {
	case hop.GetName() == "tftp" && hop.GetBytes() > 0:
		return file, true
	case hop.GetName() == "artifact" && hop.GetBytes() > 0 && strings.HasSuffix(strings.ToLower(file), ".efi"):
		return file, true
	}
	return "", false
}

// FinishIfBootProgramRefused ends s FAILED when its last hop is a completed
// boot-program download (see bootProgram): the firmware that now starts over
// with a new DHCP DISCOVER never ran what it downloaded. dhcpd calls it on a
// firmware DISCOVER before deciding whether to open a new session, so the
// refused boot keeps its verdict instead of being replaced by the retry (bootapi's
// diagnoser then names it BOOTFILE_REFUSED). It reports whether it ended s. It
// reads the last hop from etcd: call it only for an active session.
func (r *Recorder) FinishIfBootProgramRefused(ctx context.Context, s *Session) bool {
	hops, err := r.readHops(ctx, s.MAC, s.TraceID(), 1)
	if err != nil || len(hops) == 0 {
		if err != nil && ctx.Err() == nil {
			r.log.Warn("last hop", "mac", s.MAC, "err", err)
		}
		return false
	}
	file, ok := bootProgram(hops[0])
	if !ok {
		return false
	}
	s.Finish(bootapiv1.SessionState_SESSION_STATE_FAILED, hops[0].GetName(), fmt.Sprintf(
		"the firmware downloaded %s and started over (DHCP again) without running it: refused by Secure Boot, or not a boot program for this machine", file))
	return true
}

// OpenFirmwareAttempt opens the session of a firmware's first DHCP packet (a
// DISCOVER or a Solicit): a new boot attempt, unless the packet is a
// retransmission (same transaction), or the active session's firmware refused
// the boot program it downloaded (FinishIfBootProgramRefused ends that session
// failed and the retry stays in it).
func (r *Recorder) OpenFirmwareAttempt(ctx context.Context, mac, site string, retransmit bool) *Session {
	fresh := !retransmit
	if cur, active := r.Join(mac); fresh && active && r.FinishIfBootProgramRefused(ctx, cur) {
		fresh = false
	}
	return r.Open(ctx, mac, OpenOptions{New: fresh, Site: site})
}
