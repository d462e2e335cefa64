package diagnose

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// failed finds a failure that ends the boot whatever the time: the installer's
// failure, a download refused (404, checksum), a boot file missing or its
// transfer stopped, each unless the boot got past it later.
func failed(hops []*bootapiv1.Hop) *bootapiv1.Diagnosis {
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		later := hops[i+1:]
		switch h.GetName() {
		case "callback":
			if reportState(h) != "failed" {
				return nil // the installer runs or succeeded: past every boot stage
			}
			return &bootapiv1.Diagnosis{
				Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_INSTALLER_FAILED, Hop: h.GetName(), Service: h.GetService(),
				Cause:    "the installer reported failure: " + reportMessage(h),
				NextStep: "read the installer's log on the machine's console; fix the profile or the machine and create a new job",
			}
		case "artifact":
			if !h.GetFailed() || passed(later, "artifact", "callback") {
				continue
			}
			name := firstWord(h.GetDetail())
			switch h.GetAttributes()[AttrArtifactFailure] {
			case FailureNotFound:
				return &bootapiv1.Diagnosis{
					Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND, Hop: h.GetName(), Service: h.GetService(),
					Cause:    fmt.Sprintf("artifact %s answered 404: the artifact store has no such artifact", name),
					NextStep: fmt.Sprintf("upload %s (bootctl artifacts upload) or point the profile at an artifact that exists (bootctl artifacts list)", name),
				}
			case FailureChecksum:
				return &bootapiv1.Diagnosis{
					Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_CHECKSUM, Hop: h.GetName(), Service: h.GetService(),
					Cause:    fmt.Sprintf("artifact %s did not match its checksum: %s", name, artifactError(h.GetDetail())),
					NextStep: fmt.Sprintf("upload %s again, or update the profile's sha256 pin to the content it should boot", name),
				}
			}
		case "tftp":
			if !h.GetFailed() || passed(later, "tftp", "ipxe.dhcp", "script", "artifact", "callback") {
				continue
			}
			file := h.GetAttributes()["tftp.file"]
			if file == "" {
				file = strings.TrimSuffix(firstWord(h.GetDetail()), ":")
			}
			switch outcome := h.GetAttributes()[AttrTFTPOutcome]; {
			case outcome == OutcomeNotFound:
				return &bootapiv1.Diagnosis{
					Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_NOT_FOUND, Hop: h.GetName(), Service: h.GetService(),
					Cause:    fmt.Sprintf("the firmware asked tftpd for %s, which does not exist", file),
					NextStep: "check the site's boot-file map (bootctl sites get) and tftpd's file map; import the iPXE binaries (bootctl artifacts import-ipxe)",
				}
			case outcome == OutcomeTimedOut || (outcome == "aborted by client" && h.GetBytes() > 0):
				block := h.GetAttributes()[AttrTFTPBlock]
				if block == "" {
					block = "?"
				}
				return &bootapiv1.Diagnosis{
					Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_TFTP_STALLED, Hop: h.GetName(), Service: h.GetService(),
					Cause:    fmt.Sprintf("the TFTP transfer of %s stalled at block %s (%s)", file, block, outcome),
					NextStep: "look for packet loss or a firewall between the machine and tftpd (UDP, ephemeral ports), or a blksize the path's MTU cannot carry",
				}
			}
		}
	}
	return nil
}

// loopAfter is how many times the boot file may be sent without a script
// asked for before the boot counts as a chain-load loop: a UEFI firmware's
// size probe is dropped before, and a retry after a lost transfer is one more.
const loopAfter = 3

// looping finds iPXE chain-loading itself: the boot file sent again and again
// with no script asked for in between, because the DHCP server answers iPXE as
// it answers the firmware. Such a boot never stops recording hops, so no
// stall timeout would name it.
func looping(hops []*bootapiv1.Hop) *bootapiv1.Diagnosis {
	n, file := 0, ""
	var last *bootapiv1.Hop
scan:
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		switch h.GetName() {
		case "script", "artifact", "callback":
			break scan
		case "tftp":
			if !h.GetFailed() {
				n += 1 + int(h.GetRepeats())
				if last == nil {
					last, file = h, h.GetAttributes()["tftp.file"]
				}
			}
		}
	}
	if n < loopAfter {
		return nil
	}
	return &bootapiv1.Diagnosis{
		Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_SCRIPT_NOT_FETCHED, Hop: last.GetName(), Service: last.GetService(),
		Cause:    fmt.Sprintf("iPXE chain-loads itself in a loop: the boot file %s was sent %d times and no script was asked for; the DHCP server gives iPXE the boot file instead of the script URL", file, n),
		NextStep: "make the DHCP server answer iPXE (user class iPXE, or option 175) with bootapi's script URL, or let bootchain's dhcpd answer (proxy mode)",
	}
}

// stalled names the stage hops ends at and how long a boot may sit there.
func stalled(hops []*bootapiv1.Hop, t Timeouts) (*bootapiv1.Diagnosis, time.Duration) {
	last := hops[len(hops)-1]
	d := &bootapiv1.Diagnosis{Hop: last.GetName(), Service: last.GetService()}
	if last.GetFailed() {
		d.Class = bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER
		d.Cause = fmt.Sprintf("%s (%s) failed and nothing followed: %s", last.GetName(), last.GetService(), last.GetDetail())
		d.NextStep = "read the failing service's log for this machine, and bootctl trace for the hops before"
		return d, t.Other
	}
	switch name := last.GetName(); {
	case name == "callback":
		return nil, 0 // the installer runs: its job's deadline covers it
	case name == "tftp":
		if want, got, ok := wrongArch(hops); ok {
			d.Class = bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_WRONG_ARCH
			d.Cause = fmt.Sprintf("the boot file %s is built for %s but the client announced architecture %s (option 93): its firmware cannot run it", last.GetAttributes()["tftp.file"], got, want)
			d.NextStep = "fix the site's boot-file map so that this architecture gets its own iPXE binary (bootctl sites get)"
			return d, t.IPXE
		}
		fallthrough
	default:
		if name == "artifact" && bootProgram(last) {
			// UEFI HTTP boot: the boot program itself came from artifactstore.
			st := stages["tftp"]
			after := st.timeout(t)
			d.Class, d.Cause, d.NextStep = st.class, fmt.Sprintf(st.cause, firstWord(last.GetDetail()), after), st.next
			return d, after
		}
		if st, ok := stages[name]; ok {
			after := st.timeout(t)
			d.Class, d.Cause, d.NextStep = st.class, fmt.Sprintf(st.cause, st.what(last), after), st.next
			return d, after
		}
	}
	d.Class = bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER
	d.Cause = fmt.Sprintf("no progress for %s after %s (%s) %s", t.Other, last.GetName(), last.GetService(), last.GetDetail())
	d.NextStep = "bootctl trace shows the hops so far; read the log of the service named"
	return d, t.Other
}

// stage is what a boot that stops after a hop of a given name means.
type stage struct {
	class bootapiv1.DiagnosisClass
	// cause is a format of what (from the hop), then the stage's timeout.
	cause, next string
	what        func(*bootapiv1.Hop) string
	timeout     func(Timeouts) time.Duration
}

// stages are the stall rules by the name of the last hop.
var stages = map[string]stage{
	"dhcp.discover": {
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OFFER_IGNORED,
		"an OFFER went out (%s) but no REQUEST came within %s: the firmware ignored the offer",
		"check that the machine hears dhcpd (relay, VLAN), that no other DHCP server answers first, and in proxy mode that UDP 4011 reaches dhcpd",
		(*bootapiv1.Hop).GetDetail, func(t Timeouts) time.Duration { return t.Offer },
	},
	"dhcp.request": {
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER,
		"the firmware got its address (%s) but asked tftpd for no boot file within %s",
		"check next-server and the boot file name in dhcpd's answer, and that tftpd listens on the site's address",
		(*bootapiv1.Hop).GetDetail, func(t Timeouts) time.Duration { return t.Other },
	},
	"tftp": {
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_REFUSED,
		"the firmware downloaded the boot file %s and did not run it: nothing it asks for next (iPXE's DHCP, shim's GRUB, GRUB's config) followed within %s (refused by Secure Boot, or not a boot program for this machine)",
		"watch the machine's console (Secure Boot answers \"Access Denied\", shim \"Verification failed\"): sign the boot program with a key the firmware or shim trusts (docs/firmware.md), or give this firmware a binary it runs",
		func(h *bootapiv1.Hop) string { return h.GetAttributes()["tftp.file"] }, func(t Timeouts) time.Duration { return t.IPXE },
	},
	"ipxe.dhcp": {
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_SCRIPT_NOT_FETCHED,
		"iPXE started (its DHCP was answered: %s) but never asked for its script within %s",
		"check that dhcpd answers iPXE (user class iPXE, option 175) with the script URL and that bootapi's public URL is reachable from the machine",
		(*bootapiv1.Hop).GetDetail, func(t Timeouts) time.Duration { return t.IPXE },
	},
	"script": {
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_KERNEL_NOT_FETCHED,
		"the boot script was served (%s) but no kernel download followed within %s",
		"check that the machine reaches the artifact store URL in its script (bootctl machines preview) and read iPXE's error on the console",
		(*bootapiv1.Hop).GetDetail, func(t Timeouts) time.Duration { return t.Script },
	},
	"artifact": {
		bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_NO_CALLBACK,
		"the downloads finished (last %s) but no installer callback came within %s: the kernel or initrd did not start",
		"watch the machine's console: a kernel for another architecture, a panic, or an initrd without the installer; check that bootchain.callback= is reachable from the machine",
		func(h *bootapiv1.Hop) string { return firstWord(h.GetDetail()) }, func(t Timeouts) time.Duration { return t.Download },
	},
}

// passed reports whether the boot got past a failure: a later hop of one of
// names that did not fail.
func passed(later []*bootapiv1.Hop, names ...string) bool {
	for _, h := range later {
		for _, n := range names {
			if h.GetName() == n && !h.GetFailed() {
				return true
			}
		}
	}
	return false
}

// reportState is the state an installer reported on a callback hop.
func reportState(h *bootapiv1.Hop) string {
	if s := h.GetAttributes()[AttrReportState]; s != "" {
		return s
	}
	s, _, _ := strings.Cut(h.GetDetail(), ":")
	return s
}

func reportMessage(h *bootapiv1.Hop) string {
	_, msg, ok := strings.Cut(h.GetDetail(), ": ")
	if !ok || strings.TrimSpace(msg) == "" {
		return "(no message)"
	}
	return msg
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	return w
}

// artifactError is the error on an artifact hop's detail, "<name> <status>
// <bytes>B <error>".
func artifactError(detail string) string {
	f := strings.SplitN(strings.TrimSpace(detail), " ", 4)
	if len(f) < 4 {
		return detail
	}
	return f[3]
}

// wrongArch compares the architecture of the last boot file sent with the one
// the client announced in its latest DHCP exchange.
func wrongArch(hops []*bootapiv1.Hop) (want, got string, wrong bool) {
	got = hops[len(hops)-1].GetAttributes()[AttrFileArch]
	if got == "" {
		return "", "", false
	}
	for i := len(hops) - 2; i >= 0; i-- {
		v, ok := hops[i].GetAttributes()[AttrClientArch]
		if !ok {
			continue
		}
		code, err := strconv.Atoi(v)
		if err != nil {
			return "", "", false
		}
		exp, known := clientArches[code]
		if !known {
			return "", "", false
		}
		if exp != got {
			return fmt.Sprintf("%d (%s)", code, exp), got, true
		}
		return "", "", false
	}
	return "", "", false
}

// bootProgram reports whether an artifact hop is the firmware's download of an
// EFI boot program (UEFI HTTP boot) rather than a kernel or initrd: a program
// that runs asks for something next within seconds.
func bootProgram(h *bootapiv1.Hop) bool {
	return h.GetBytes() > 0 && strings.HasSuffix(strings.ToLower(firstWord(h.GetDetail())), ".efi")
}
