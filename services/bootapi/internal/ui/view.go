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
type view[T proto.Message] struct {
	cache *store.Cache[T]
	// cmp orders the rows (first shown first).
	cmp func(a, b T) int
	// group names a row's site and state, for the counts by site.
	group func(T) (site, state string)

	items map[string]T // owned by Run
	dirty bool
	// sorted is the last build's order, owned by Run: a build merges the
	// records changed since (changed) into it instead of sorting the fleet
	// again. A fleet powering on changes thousands of records a second,
	// and sorting 100,000 of them every tick took most of a core.
	sorted, spare []entry[T]
	changed       map[string]struct{}
	// all: the next build sorts every record (the first one).
	all bool
}

// entry is a record of a view with its name, in the view's order.
type entry[T proto.Message] struct {
	name string
	v    T
}

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
	return &view[T]{cache: c, cmp: cmp, group: group, items: map[string]T{}, changed: map[string]struct{}{}, all: true}
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
	if !v.all {
		for name, old := range v.items {
			if r, ok := fresh[name]; !ok || any(r) != any(old) {
				v.changed[name] = struct{}{}
			}
		}
		for name := range fresh {
			if _, ok := v.items[name]; !ok {
				v.changed[name] = struct{}{}
			}
		}
	}
	v.items, v.dirty = fresh, true
}

// apply records one cache event.
func (v *view[T]) apply(ev store.Event[T]) {
	if ev.Deleted {
		delete(v.items, ev.Name)
	} else {
		v.items[ev.Name] = ev.Value
	}
	if !v.all {
		v.changed[ev.Name] = struct{}{}
	}
	v.dirty = true
}

// build sorts the records into a new snapshot.
func (v *view[T]) build() *snapshot[T] {
	v.order()
	rows := make([]T, len(v.sorted))
	for i, e := range v.sorted {
		rows[i] = e.v
	}
	bySite := map[string]*siteCount{}
	for _, r := range rows {
		site, state := v.group(r)
		sc := bySite[site]
		if sc == nil {
			sc = &siteCount{Site: site, States: map[string]int{}}
			bySite[site] = sc
		}
		sc.Total++
		sc.States[state]++
	}
	sites := make([]siteCount, 0, len(bySite))
	for _, sc := range bySite {
		sites = append(sites, *sc)
	}
	slices.SortFunc(sites, func(a, b siteCount) int { return strings.Compare(a.Site, b.Site) })
	v.dirty = false
	return &snapshot[T]{rows: rows, sites: sites}
}

// order brings sorted up to date with items: a full sort after a reset or when
// most records changed, else the changed records, sorted, merged into the
// others (each placed by a binary search), so that a tick costs a copy of the
// fleet and a few comparisons per changed record.
func (v *view[T]) order() {
	cmpEntry := func(a, b entry[T]) int { return v.cmp(a.v, b.v) }
	if v.all || 2*len(v.changed) > len(v.sorted) {
		s := v.sorted[:0]
		for name, r := range v.items {
			s = append(s, entry[T]{name, r})
		}
		slices.SortFunc(s, cmpEntry)
		clear(s[len(s):cap(s)]) // drop the references to deleted records
		v.sorted, v.all = s, false
		clear(v.changed)
		return
	}
	if len(v.changed) == 0 {
		return
	}
	add := make([]entry[T], 0, len(v.changed))
	for name := range v.changed {
		if r, ok := v.items[name]; ok {
			add = append(add, entry[T]{name, r})
		}
	}
	slices.SortFunc(add, cmpEntry)
	// The unchanged records keep their order.
	kept := v.sorted[:0]
	for _, e := range v.sorted {
		if _, ch := v.changed[e.name]; !ch {
			kept = append(kept, e)
		}
	}
	clear(v.sorted[len(kept):])
	clear(v.changed)
	out := slices.Grow(v.spare[:0], len(kept)+len(add))
	for _, a := range add {
		// Records are unique by the view's order (its last key is the name),
		// so a is placed before the first kept record that sorts after it.
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
