package ui

import (
	"slices"
	"strings"

	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/protobuf/proto"
)

// view keeps one cache's records as a sorted, immutable snapshot that every
// request shares: a page scans it and takes its rows, and nothing per request
// copies the fleet. Run owns the map and rebuilds the snapshot when the cache
// has changed, at most once per tick.
//
// A build costs one copy of the fleet's pointers and a few comparisons per
// record changed since the last one, not a sort of the fleet: a fleet
// powering on changes thousands of records a second, and sorting and
// counting 300,000 machines and sessions every second took half of
// bootapi's CPU.
type view[T proto.Message] struct {
	cache *store.Cache[T]
	// cmp orders the rows (first shown first). Its last key is the record's
	// name, so that no two records compare equal.
	cmp func(a, b T) int
	// group names a row's site and state, for the counts by site.
	group func(T) (site, state string)

	items map[string]T // owned by Run
	dirty bool
	// regroup: the next build counts every record again (group reads more
	// than the record, and that changed).
	regroup bool

	// sorted is the last build's rows (shared with its snapshot: never
	// changed); changed holds the records changed since, each with its value
	// in sorted. all: the next build sorts every record.
	sorted  []T
	changed map[string]was[T]
	all     bool
	// counts is how many records of sorted are in each group.
	counts map[groupKey]int
}

// was is a changed record's value in the last build (had: it was in it).
type was[T proto.Message] struct {
	v   T
	had bool
}

type groupKey struct{ site, state string }

// snapshot is one rebuild of a view: never changed once published.
type snapshot[T proto.Message] struct {
	rows []T
	// sites are the sites in order, each with its counts by state.
	sites []siteCount
}

// siteCount is how many of a view's records of one site are in each state.
type siteCount struct {
	Site   string
	Total  int
	States map[string]int
}

func newView[T proto.Message](c *store.Cache[T], cmp func(a, b T) int, group func(T) (string, string)) *view[T] {
	v := &view[T]{cache: c, cmp: cmp, group: group}
	v.forget()
	return v
}

// forget drops the view's records: the next reset starts it again, and the
// build after it sorts every record.
func (v *view[T]) forget() {
	v.items, v.changed, v.counts = map[string]T{}, map[string]was[T]{}, map[groupKey]int{}
	v.sorted, v.dirty, v.regroup, v.all = nil, false, false, true
}

// reset replaces the view's records with a cache snapshot. Only the records
// that differ from the view's are marked changed: a view that fell behind a
// fleet's changes catches up without sorting the fleet again. The cache
// replaces a record's value on change, never changes it in place, so an
// unchanged record is the same pointer.
func (v *view[T]) reset(items []store.Item[T]) {
	fresh := make(map[string]T, len(items))
	for _, it := range items {
		fresh[it.Name] = it.Value
	}
	for name, old := range v.items {
		if r, ok := fresh[name]; !ok || any(r) != any(old) {
			v.change(name)
		}
	}
	for name := range fresh {
		if _, ok := v.items[name]; !ok {
			v.change(name)
		}
	}
	v.items, v.dirty = fresh, true
}

// apply records one cache event.
func (v *view[T]) apply(ev store.Event[T]) {
	v.change(ev.Name)
	if ev.Deleted {
		delete(v.items, ev.Name)
	} else {
		v.items[ev.Name] = ev.Value
	}
	v.dirty = true
}

// change notes that name's record is about to change: its value now is the
// one in the last build.
func (v *view[T]) change(name string) {
	if v.all {
		return
	}
	if _, ok := v.changed[name]; ok {
		return
	}
	old, had := v.items[name]
	v.changed[name] = was[T]{old, had}
}

// build orders and counts the records into a new snapshot.
func (v *view[T]) build() *snapshot[T] {
	v.order()
	if v.regroup {
		clear(v.counts)
		for _, r := range v.sorted {
			v.count(r, 1)
		}
		v.regroup = false
	}
	bySite := map[string]*siteCount{}
	for k, n := range v.counts {
		if n == 0 {
			continue
		}
		sc := bySite[k.site]
		if sc == nil {
			sc = &siteCount{Site: k.site, States: map[string]int{}}
			bySite[k.site] = sc
		}
		sc.Total += n
		sc.States[k.state] += n
	}
	sites := make([]siteCount, 0, len(bySite))
	for _, sc := range bySite {
		sites = append(sites, *sc)
	}
	slices.SortFunc(sites, func(a, b siteCount) int { return strings.Compare(a.Site, b.Site) })
	v.dirty = false
	return &snapshot[T]{rows: v.sorted, sites: sites}
}

// count adds d to r's group's count.
func (v *view[T]) count(r T, d int) {
	site, state := v.group(r)
	k := groupKey{site, state}
	if n := v.counts[k] + d; n != 0 {
		v.counts[k] = n
	} else {
		delete(v.counts, k)
	}
}

// order makes sorted the records of items in order, counted: a full sort at
// first or when most records changed; else the changed records' old values
// (each found by a binary search) left out and their new ones, sorted,
// merged in (each placed by a binary search). A record's old value is
// counted out of the group it has now; where that can differ from the group
// it was counted in (the jobs' groups read the machines), the caller sets
// regroup.
func (v *view[T]) order() {
	if !v.all && len(v.changed) == 0 {
		return
	}
	var at []int
	if !v.all && 2*len(v.changed) <= len(v.sorted) {
		at = v.positions()
	}
	if v.all || at == nil {
		s := make([]T, 0, len(v.items))
		clear(v.counts)
		for _, r := range v.items {
			v.count(r, 1)
			s = append(s, r)
		}
		slices.SortFunc(s, v.cmp)
		v.sorted, v.all = s, false
		clear(v.changed)
		return
	}
	add := make([]T, 0, len(v.changed))
	for name, w := range v.changed {
		if w.had {
			v.count(w.v, -1)
		}
		if r, ok := v.items[name]; ok {
			v.count(r, 1)
			add = append(add, r)
		}
	}
	clear(v.changed)
	slices.SortFunc(add, v.cmp)
	out := make([]T, 0, len(v.sorted)-len(at)+len(add))
	prev := 0
	for _, end := range append(at, len(v.sorted)) {
		// The kept records between two left out, with the new ones that
		// sort before the last of them.
		seg := v.sorted[prev:end]
		for len(seg) > 0 && len(add) > 0 {
			i, _ := slices.BinarySearchFunc(seg, add[0], v.cmp)
			out = append(out, seg[:i]...)
			if seg = seg[i:]; len(seg) > 0 {
				out = append(out, add[0])
				add = add[1:]
			}
		}
		out = append(out, seg...)
		prev = end + 1
	}
	v.sorted = append(out, add...)
}

// positions returns where the changed records' old values are in sorted, in
// order, or nil if one is not where its value sorts (a record changed in
// place): then only a full sort is right.
func (v *view[T]) positions() []int {
	at := make([]int, 0, len(v.changed))
	for _, w := range v.changed {
		if !w.had {
			continue
		}
		i, found := slices.BinarySearchFunc(v.sorted, w.v, v.cmp)
		if !found || any(v.sorted[i]) != any(w.v) {
			return nil
		}
		at = append(at, i)
	}
	slices.Sort(at)
	return at
}

// page is the rows of one page of a filtered snapshot and the number of rows
// the filter kept.
type page[T any] struct {
	Rows  []T
	Total int
	// Page is the page shown (from 0) and Pages how many there are.
	Page, Pages int
}

// paginate scans rows, keeping those keep accepts, and returns the n rows of
// page p (clamped to the last page). Only the kept rows of that page are
// collected; the others are counted.
func paginate[T any](rows []T, keep func(T) bool, p, n int) page[T] {
	total := 0
	if keep == nil {
		total = len(rows)
	} else {
		for _, r := range rows {
			if keep(r) {
				total++
			}
		}
	}
	pages := max(1, (total+n-1)/n)
	p = min(max(p, 0), pages-1)
	out := page[T]{Total: total, Page: p, Pages: pages, Rows: make([]T, 0, min(n, total))}
	skip := p * n
	for _, r := range rows {
		if len(out.Rows) == n {
			break
		}
		if keep != nil && !keep(r) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		out.Rows = append(out.Rows, r)
	}
	return out
}
