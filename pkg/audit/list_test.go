package audit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// TestList checks paging newest first and each filter against events recorded
// at known times.
func TestList(t *testing.T) {
	st := storetest.New(t)
	log, err := audit.New(audit.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i := range 25 {
		ev := audit.Event{
			Time: t0.Add(time.Duration(i) * time.Minute), Identity: []string{"cert:admin(admin)", "token:ci-bot(operator)"}[i%2],
			Action: []string{"/bootchain.bootapi.v1.JobService/CreateJob", audit.ActionDispatch}[i%2], Resource: fmt.Sprint("r", i%5),
		}
		if err := log.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// list pages through q and returns the events' minutes after t0.
	list := func(t *testing.T, q audit.Query) (pages [][]int) {
		t.Helper()
		for {
			evs, next, err := audit.List(context.Background(), st, q)
			if err != nil {
				t.Fatal(err)
			}
			var page []int
			for _, ev := range evs {
				page = append(page, int(ev.GetTime().AsTime().Sub(t0)/time.Minute))
			}
			pages = append(pages, page)
			if next == "" {
				return pages
			}
			q.PageToken = next
		}
	}
	for _, tc := range []struct {
		name string
		q    audit.Query
		want [][]int
	}{
		{"pages", audit.Query{PageSize: 10}, [][]int{
			{24, 23, 22, 21, 20, 19, 18, 17, 16, 15}, {14, 13, 12, 11, 10, 9, 8, 7, 6, 5}, {4, 3, 2, 1, 0},
		}},
		{"identity", audit.Query{Identity: "ci-bot", PageSize: 5}, [][]int{{23, 21, 19, 17, 15}, {13, 11, 9, 7, 5}, {3, 1}}},
		{"action", audit.Query{Action: "CreateJob", Since: t0.Add(18 * time.Minute)}, [][]int{{24, 22, 20, 18}}},
		{"resource", audit.Query{Resource: "r3"}, [][]int{{23, 18, 13, 8, 3}}},
		{"window", audit.Query{Since: t0.Add(5 * time.Minute), Until: t0.Add(8 * time.Minute)}, [][]int{{7, 6, 5}}},
		{"nothing", audit.Query{Identity: "nobody"}, [][]int{nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, list(t, tc.q)); diff != "" {
				t.Errorf("pages (-want +got):\n%s", diff)
			}
		})
	}
	if _, _, err := audit.List(context.Background(), st, audit.Query{PageToken: "/bootchain/v1/machines/x"}); !errors.Is(err, audit.ErrPageToken) {
		t.Errorf("foreign page token: %v", err)
	}
}

// FuzzParsePageToken checks that a page token the server accepts is always a key
// under the audit prefix of the expected shape.
func FuzzParsePageToken(f *testing.F) {
	for _, s := range []string{"", "00000001764583200000000000-0badf00d", "01764583200000000000-0badf00d", "01764583200000000000-0BADF00D", "../../machines/aa", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		key, err := audit.ParsePageToken(tok)
		if err != nil {
			return
		}
		if key != audit.Prefix+tok || len(tok) != 29 {
			t.Fatalf("token %q accepted as %q", tok, key)
		}
		for i, c := range []byte(tok) {
			if i != 20 && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				t.Fatalf("token %q accepted with %q", tok, c)
			}
		}
	})
}
