package httpapi

import (
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestExchangeLost(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	boot := tokenHash("bootstrap")
	exchanged := func(bootstrapHash []byte) *bootapiv1.Job {
		return &bootapiv1.Job{TokenExchanged: true, BootstrapTokenHash: bootstrapHash,
			Reports: []*bootapiv1.JobReport{{Time: timestamppb.New(t0)}}}
	}
	for name, tc := range map[string]struct {
		job   *bootapiv1.Job
		token string
		now   time.Time
		want  bool
	}{
		"bootstrap again within the grace": {exchanged(boot[:]), "bootstrap", t0.Add(30 * time.Second), true},
		"after the grace":                  {exchanged(boot[:]), "bootstrap", t0.Add(ExchangeGrace + time.Second), false},
		"fresh token already used":         {exchanged(nil), "bootstrap", t0.Add(time.Second), false},
		"another token":                    {exchanged(boot[:]), "guess", t0.Add(time.Second), false},
		"not exchanged yet":                {&bootapiv1.Job{BootstrapTokenHash: boot[:], Reports: []*bootapiv1.JobReport{{Time: timestamppb.New(t0)}}}, "bootstrap", t0, false},
	} {
		if got := exchangeLost(tc.job, tokenHash(tc.token), tc.now); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}
