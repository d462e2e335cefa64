package ui

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestViewOrder checks that a build after a few changes (merged into the
// previous order) lists the same records in the same order as a sort of them
// all, and counts them the same, whatever the changes: new records, records
// seen again (moved to the top), deleted records, a reset.
func TestViewOrder(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	machine := func(i, seen int) *bootapiv1.Machine {
		m := &bootapiv1.Machine{Mac: fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff), Site: fmt.Sprintf("s%d", i%3)}
		if seen >= 0 {
			m.LastSeenTime = timestamppb.New(base.Add(time.Duration(seen) * time.Second))
		}
		if i%5 == 0 {
			m.Discovered = true
		}
		return m
	}
	u := New(Config{Machines: store.NewCache(nil, "", func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, nil)})
	v := u.machines
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 500
	put := func(i, seen int) {
		m := machine(i, seen)
		v.apply(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: m.GetMac(), Value: m}})
	}
	for i := range n {
		put(i, -1) // never seen: ordered by MAC alone
	}
	for round := range 40 {
		switch {
		case round == 20 || round == 30:
			// The view fell behind: the cache's records, some of them
			// changed, gone or new since.
			var items []store.Item[*bootapiv1.Machine]
			j := 0
			for _, m := range v.items {
				switch j++; {
				case j%7 == 0:
					continue
				case j%11 == 0:
					m = proto.CloneOf(m)
					m.LastSeenTime = timestamppb.New(base.Add(time.Duration(round*3+rng.IntN(50)) * time.Second))
				}
				items = append(items, store.Item[*bootapiv1.Machine]{Name: m.GetMac(), Value: m})
			}
			for i := n; i < n+5; i++ {
				m := machine(i+round, round)
				items = append(items, store.Item[*bootapiv1.Machine]{Name: m.GetMac(), Value: m})
			}
			v.reset(items)
		default:
			// A few changes (the merge) or, now and then, most of the
			// fleet (a full sort).
			k := 1 + rng.IntN(20)
			if round%7 == 3 {
				k = n
			}
			for range k {
				i := rng.IntN(n + 50)
				if rng.IntN(6) == 0 {
					mac := machine(i, 0).GetMac()
					v.apply(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: mac}, Deleted: true})
					continue
				}
				// Equal times are frequent: the MAC orders them.
				put(i, round*3+rng.IntN(4))
			}
		}
		got := v.build()
		var want []*bootapiv1.Machine
		for _, m := range v.items {
			want = append(want, m)
		}
		slices.SortFunc(want, v.cmp)
		macs := func(ms []*bootapiv1.Machine) []string {
			var out []string
			for _, m := range ms {
				out = append(out, m.GetMac())
			}
			return out
		}
		if d := cmp.Diff(macs(want), macs(got.rows)); d != "" {
			t.Fatalf("round %d: order differs from a full sort (-want +got):\n%s", round, d)
		}
		wantSites := map[string]map[string]int{}
		for _, m := range v.items {
			site, state := v.group(m)
			if wantSites[site] == nil {
				wantSites[site] = map[string]int{}
			}
			wantSites[site][state]++
		}
		gotSites := map[string]map[string]int{}
		for _, sc := range got.sites {
			gotSites[sc.Site] = sc.States
		}
		if d := cmp.Diff(wantSites, gotSites); d != "" {
			t.Fatalf("round %d: counts differ from a full count (-want +got):\n%s", round, d)
		}
	}
}

// TestViewRegroup checks that the jobs' counts by site follow their machines'
// sites, which a job's own change does not say.
func TestViewRegroup(t *testing.T) {
	u := New(Config{
		Jobs:     store.NewCache(nil, "", func() *bootapiv1.Job { return &bootapiv1.Job{} }, nil),
		Machines: store.NewCache(nil, "", func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, nil),
	})
	sites := map[string]string{"52:54:00:00:00:01": "a", "52:54:00:00:00:02": "a"}
	u.jobs.group = func(j *bootapiv1.Job) (string, string) { return sites[j.GetMac()], jobState(j.GetState()) }
	for i, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02"} {
		j := &bootapiv1.Job{Id: fmt.Sprint("job-", i), Mac: mac, UpdateTime: timestamppb.Now()}
		u.jobs.apply(store.Event[*bootapiv1.Job]{Item: store.Item[*bootapiv1.Job]{Name: j.GetId(), Value: j}})
	}
	count := func() map[string]int {
		u.rebuild()
		out := map[string]int{}
		for _, sc := range u.jobSnap.Load().sites {
			out[sc.Site] = sc.Total
		}
		return out
	}
	if d := cmp.Diff(map[string]int{"a": 2}, count()); d != "" {
		t.Fatalf("before the move (-want +got):\n%s", d)
	}
	// The machine's record changes (its site): rebuild regroups the jobs.
	sites["52:54:00:00:00:02"] = "b"
	m := &bootapiv1.Machine{Mac: "52:54:00:00:00:02", Site: "b"}
	u.machines.apply(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: m.GetMac(), Value: m}})
	if d := cmp.Diff(map[string]int{"a": 1, "b": 1}, count()); d != "" {
		t.Fatalf("after a machine moved (-want +got):\n%s", d)
	}
}

// BenchmarkViewBuild rebuilds the machines view of a 300,000-machine fleet
// after 10,000 of them were seen again (a second of a fleet's first
// contact): the merge, not a sort. The figure is in docs/bootapi.md#dashboard.
//
//	go test -run '^$' -bench ViewBuild -benchmem ./services/bootapi/internal/ui/
func BenchmarkViewBuild(b *testing.B) {
	const n, changed = 300000, 10000
	base := time.Now()
	u := New(Config{Machines: store.NewCache(nil, "", func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, nil)})
	v := u.machines
	macs := make([]string, n)
	for i := range n {
		macs[i] = fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff)
		v.items[macs[i]] = &bootapiv1.Machine{Mac: macs[i], Site: fmt.Sprint("site-", i%10)}
	}
	v.build()
	seen := 0
	for b.Loop() {
		b.StopTimer()
		at := timestamppb.New(base.Add(time.Duration(seen) * time.Millisecond))
		for range changed {
			mac := macs[seen%n]
			seen++
			v.apply(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: mac,
				Value: &bootapiv1.Machine{Mac: mac, Site: v.items[mac].GetSite(), LastSeenTime: at}}})
		}
		b.StartTimer()
		v.build()
	}
}
