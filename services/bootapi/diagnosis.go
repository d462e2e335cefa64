package bootapi

import (
	"context"
	"errors"
	"flag"
	"time"

	"github.com/bootchain/bootchain/pkg/diagnose"
)

// StageTimeouts shorten StallAfter for the stages of a boot that should move
// faster: how long a boot may sit after each before it is diagnosed as stalled
// there (pkg/diagnose). Each is capped at StallAfter; zero means StallAfter.
type StageTimeouts struct {
	// Offer: an OFFER went out and no REQUEST came (OFFER_IGNORED).
	Offer time.Duration
	// IPXE: the boot file was sent or iPXE's DHCP answered, and no script was
	// asked for (SCRIPT_NOT_FETCHED, BOOTFILE_WRONG_ARCH).
	IPXE time.Duration
	// Script: a kernel boot's script was served and no kernel download
	// followed (KERNEL_NOT_FETCHED).
	Script time.Duration
	// Download: the downloads finished and no installer callback came
	// (NO_CALLBACK).
	Download time.Duration
}

// DefaultStageTimeouts: firmware that takes an offer asks within seconds,
// iPXE fetches its script and kernel within seconds; a kernel and initrd
// reach the installer's first report within minutes (StallAfter).
var DefaultStageTimeouts = StageTimeouts{Offer: time.Minute, IPXE: 2 * time.Minute, Script: 2 * time.Minute}

func (t *StageTimeouts) addFlags(fs *flag.FlagSet, prefix string) {
	fs.DurationVar(&t.Offer, prefix+"stall-after-offer", t.Offer, "diagnose a boot as OFFER_IGNORED when no REQUEST follows an OFFER for this long (capped at stall-after; 0: stall-after)")
	fs.DurationVar(&t.IPXE, prefix+"stall-after-ipxe", t.IPXE, "diagnose a boot as SCRIPT_NOT_FETCHED (or BOOTFILE_WRONG_ARCH) when iPXE or its boot file asks for no script for this long (capped at stall-after; 0: stall-after)")
	fs.DurationVar(&t.Script, prefix+"stall-after-script", t.Script, "diagnose a boot as KERNEL_NOT_FETCHED when no kernel download follows its script for this long (capped at stall-after; 0: stall-after)")
	fs.DurationVar(&t.Download, prefix+"stall-after-download", t.Download, "diagnose a boot as NO_CALLBACK when no installer callback follows its downloads for this long (capped at stall-after; 0: stall-after)")
}

func (t StageTimeouts) validate() error {
	if t.Offer < 0 || t.IPXE < 0 || t.Script < 0 || t.Download < 0 {
		return errors.New("bootapi: stall-after-offer, -ipxe, -script and -download must not be negative")
	}
	return nil
}

// diagnosis is the rules' timeouts: each stage's, capped at stallAfter.
func (t StageTimeouts) diagnosis(stallAfter time.Duration) diagnose.Timeouts {
	capped := func(d time.Duration) time.Duration {
		if d <= 0 || d > stallAfter {
			return stallAfter
		}
		return d
	}
	return diagnose.Timeouts{Offer: capped(t.Offer), IPXE: capped(t.IPXE), Script: capped(t.Script), Download: capped(t.Download), Other: stallAfter}
}

// sweepSessions diagnoses the boot sessions whose stage timeout has passed.
func (s *Server) sweepSessions(ctx context.Context) {
	if n := s.diagnoser.Sweep(ctx); n > 0 {
		s.log.Info("boot sessions stalled", "count", n)
	}
}
