package bootapi

import (
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/diagnose"
	"github.com/google/go-cmp/cmp"
)

func TestStageTimeouts(t *testing.T) {
	for name, tc := range map[string]struct {
		stages StageTimeouts
		after  time.Duration
		want   diagnose.Timeouts
	}{
		"defaults":              {DefaultStageTimeouts, 5 * time.Minute, diagnose.Timeouts{Offer: time.Minute, IPXE: 2 * time.Minute, Script: 2 * time.Minute, Download: 5 * time.Minute, Other: 5 * time.Minute}},
		"capped at stall-after": {DefaultStageTimeouts, 20 * time.Second, diagnose.Timeouts{Offer: 20 * time.Second, IPXE: 20 * time.Second, Script: 20 * time.Second, Download: 20 * time.Second, Other: 20 * time.Second}},
		"zero is stall-after":   {StageTimeouts{Offer: 3 * time.Second}, time.Minute, diagnose.Timeouts{Offer: 3 * time.Second, IPXE: time.Minute, Script: time.Minute, Download: time.Minute, Other: time.Minute}},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.stages.diagnosis(tc.after)); diff != "" {
				t.Errorf("timeouts (-want +got):\n%s", diff)
			}
		})
	}
	if err := (StageTimeouts{Script: -time.Second}).validate(); err == nil {
		t.Error("a negative stage timeout passed")
	}
}
