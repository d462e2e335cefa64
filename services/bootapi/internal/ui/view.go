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
	return &view[T]{cache: c, cmp: cmp, group: group, items: map[string]T{}}
}

// reset replaces the view's records with a cache snapshot.
func (v *view[T]) reset(items []store.Item[T]) {
	clear(v.items)
	for _, it := range items {
		v.items[it.Name] = it.Value
	}
	v.dirty = true
}

// apply records one cache event.
func (v *view[T]) apply(ev store.Event[T]) {
	if ev.Deleted {
		delete(v.items, ev.Name)
	} else {
		v.items[ev.Name] = ev.Value
	}
	v.dirty = true
}

// build sorts the records into a new snapshot.
func (v *view[T]) build() *snapshot[T] {
	rows := make([]T, 0, len(v.items))
	for _, r := range v.items {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, v.cmp)
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
