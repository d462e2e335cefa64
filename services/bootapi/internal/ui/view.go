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
// A build costs a copy of the fleet and a few comparisons per record changed
// since the last one, not a sort of the fleet: a fleet powering on changes
// thousands of records a second, and sorting and counting 300,000 machines
// and sessions every second took half of bootapi's CPU.
type view[T proto.Message] struct {
	cache *store.Cache[T]
	// cmp orders the rows (first shown first). Its last key is the record's
	// name, so that no two records compare equal.
	cmp func(a, b T) int
	// group names a row's site and state, for the counts by site.
	group func(T) (site, state string)

	items map[string]T // owned by Run
	dirty bool
	// regroup: the next build groups every record again (group reads more
	// than the record, and that changed).
	regroup bool

	// sorted is the last build's records in order (spare: the other buffer
	// of the merge); changed holds the records changed since, each with the
	// value it has in sorted. all: the next build sorts every record.
	sorted, spare []entry[T]
	changed       map[string]was[T]
	all           bool

	// groups are the (site, state) pairs seen, counts how many records of
	// sorted are in each.
	groups  []groupKey
	groupOf map[groupKey]int32
	counts  []int
}

// entry is a record of a view with its name and group.
type entry[T proto.Message] struct {
	name string
	v    T
	g    int32
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
	return &view[T]{cache: c, cmp: cmp, group: group, items: map[string]T{}, changed: map[string]was[T]{},
		groupOf: map[groupKey]int32{}, all: true}
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
	rows := make([]T, len(v.sorted))
	for i, e := range v.sorted {
		rows[i] = e.v
	}
	bySite := map[string]*siteCount{}
	for g, n := range v.counts {
		if n == 0 {
			continue
		}
		k := v.groups[g]
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
	return &snapshot[T]{rows: rows, sites: sites}
}

// groupIndex is the index of r's group in groups.
func (v *view[T]) groupIndex(r T) int32 {
	site, state := v.group(r)
	k := groupKey{site, state}
	g, ok := v.groupOf[k]
	if !ok {
		g = int32(len(v.groups))
		v.groups = append(v.groups, k)
		v.groupOf[k] = g
		v.counts = append(v.counts, 0)
	}
	return g
}

// order brings sorted and counts up to date with items: a full sort at first
// or when most records changed, else the changed records taken out (each
// found by a binary search for its old value) and merged back in, sorted,
// each placed by a binary search.
func (v *view[T]) order() {
	cmpEntry := func(a, b entry[T]) int { return v.cmp(a.v, b.v) }
	if v.regroup && !v.all {
		clear(v.counts)
		for i := range v.sorted {
			g := v.groupIndex(v.sorted[i].v)
			v.sorted[i].g = g
			v.counts[g]++
		}
	}
	v.regroup = false
	if v.all || 2*len(v.changed) > len(v.sorted) || !v.takeOut(cmpEntry) {
		s := v.sorted[:0]
		clear(v.counts)
		for name, r := range v.items {
			g := v.groupIndex(r)
			v.counts[g]++
			s = append(s, entry[T]{name, r, g})
		}
		slices.SortFunc(s, cmpEntry)
		clear(s[len(s):cap(s)]) // drop the references to deleted records
		v.sorted, v.all = s, false
		clear(v.changed)
		return
	}
	add := make([]entry[T], 0, len(v.changed))
	for name := range v.changed {
		if r, ok := v.items[name]; ok {
			g := v.groupIndex(r)
			v.counts[g]++
			add = append(add, entry[T]{name, r, g})
		}
	}
	clear(v.changed)
	slices.SortFunc(add, cmpEntry)
	kept := v.sorted
	out := slices.Grow(v.spare[:0], len(kept)+len(add))
	for _, a := range add {
		// a is placed before the first kept record that sorts after it.
		i, _ := slices.BinarySearchFunc(kept, a, cmpEntry)
		out = append(out, kept[:i]...)
		out = append(out, a)
		kept = kept[i:]
	}
	out = append(out, kept...)
	old := v.sorted
	clear(old[:cap(old)]) // drop the references to replaced records
	v.spare, v.sorted = old[:0], out
}

// takeOut removes the changed records' old values from sorted, counted out
// of their groups. It reports false, having changed nothing, if one is not
// where its old value sorts (a record changed in place): then only a full
// sort is right.
func (v *view[T]) takeOut(cmpEntry func(a, b entry[T]) int) bool {
	at := make([]int, 0, len(v.changed))
	for name, w := range v.changed {
		if !w.had {
			continue
		}
		i, found := slices.BinarySearchFunc(v.sorted, entry[T]{name: name, v: w.v}, cmpEntry)
		if !found || v.sorted[i].name != name || any(v.sorted[i].v) != any(w.v) {
			return false
		}
		at = append(at, i)
	}
	slices.Sort(at)
	kept := v.sorted[:0]
	prev := 0
	for _, i := range at {
		kept = append(kept, v.sorted[prev:i]...)
		v.counts[v.sorted[i].g]--
		prev = i + 1
	}
	kept = append(kept, v.sorted[prev:]...)
	clear(v.sorted[len(kept):])
	v.sorted = kept
	return true
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
