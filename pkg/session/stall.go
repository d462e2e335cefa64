package session

import (
	"context"
	"fmt"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
)

// MarkStalled ends every active session whose last hop is older than after: FAILED
// when that hop failed, STALLED otherwise, naming the hop in both cases. It returns
// how many it marked. Any replica may run it; the writes are compare-and-swap.
// Its etcd reads take ctx, and it stops early when ctx ends.
func (r *Recorder) MarkStalled(ctx context.Context, after time.Duration, now time.Time) int {
	n := 0
	// The record's update time trails the hops by at most touchAfter: a cheap
	// first filter before reading the last hop.
	stale := r.cache.List(func(it store.Item[*bootapiv1.BootSession]) bool {
		bs := it.Value
		return bs.GetState() == bootapiv1.SessionState_SESSION_STATE_ACTIVE && now.Sub(bs.GetUpdateTime().AsTime()) >= after
	})
	for _, it := range stale {
		if ctx.Err() != nil {
			break
		}
		bs := it.Value
		hops, err := r.readHops(ctx, bs.GetMac(), bs.GetTraceId(), 1)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("stall check", "mac", bs.GetMac(), "err", err)
			}
			continue
		}
		var last *bootapiv1.Hop
		if len(hops) > 0 {
			last = hops[0]
			end := last.GetStartTime().AsTime().Add(last.GetDuration().AsDuration())
			if lr := last.GetLastRepeatTime(); lr != nil && lr.AsTime().After(end) {
				end = lr.AsTime()
			}
			if now.Sub(end) < after {
				continue
			}
		}
		state, hop, msg := stallVerdict(last, after)
		seen := bs.GetUpdateTime().AsTime()
		sh := r.shard(bs.GetMac())
		sh.mu.Lock()
		sess := sh.get(bs.GetMac()).session(r, sh, bs)
		sh.mu.Unlock()
		sess.mutate(func(cur *bootapiv1.BootSession) *bootapiv1.BootSession {
			// Re-check against the latest record: the machine may have moved on.
			if cur.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE || cur.GetUpdateTime().AsTime().After(seen) {
				return cur
			}
			cur.State, cur.FailedHop, cur.Message = state, hop, msg
			return cur
		})
		n++
	}
	return n
}

func stallVerdict(last *bootapiv1.Hop, after time.Duration) (bootapiv1.SessionState, string, string) {
	if last == nil {
		return bootapiv1.SessionState_SESSION_STATE_STALLED, "", fmt.Sprintf("no hop recorded within %s of the session opening", after)
	}
	if last.GetFailed() {
		return bootapiv1.SessionState_SESSION_STATE_FAILED, last.GetName(), fmt.Sprintf("%s (%s) failed: %s", last.GetName(), last.GetService(), last.GetDetail())
	}
	if file, ok := bootProgram(last); ok {
		return bootapiv1.SessionState_SESSION_STATE_FAILED, last.GetName(), fmt.Sprintf(
			"the firmware downloaded %s and did not run it (nothing followed within %s): refused by Secure Boot, or not a boot program for this machine", file, after)
	}
	return bootapiv1.SessionState_SESSION_STATE_STALLED, last.GetName(), fmt.Sprintf("no progress for %s after %s (%s) %s", after, last.GetName(), last.GetService(), last.GetDetail())
}

// bootProgram reports whether hop is a completed download of a boot program by the
// firmware: a TFTP transfer, or an HTTP download of an EFI binary (UEFI HTTP
// boot). A boot program that runs asks for something next (iPXE's DHCP, GRUB's
// config) within seconds; silence after it means the firmware would not run it, as
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
// refused boot keeps its verdict instead of being replaced by the retry. It
// reports whether it ended s. It reads the last hop from etcd: call it only for
// an active session.
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
