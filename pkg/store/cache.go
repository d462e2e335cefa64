package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Item is one cached value with the revision it was written at. Values handed out by
// a Cache are shared: treat them as read-only and proto.Clone before changing.
type Item[T proto.Message] struct {
	// Name is the key with the cache's prefix removed.
	Name        string
	Value       T
	ModRevision int64
}

// Event is one change seen by a Cache.
type Event[T proto.Message] struct {
	Item[T]
	// Deleted is true when the key was removed; Value is then the last known value
	// (from the cache itself: the watch does not ask etcd for previous values,
	// which would cost etcd a read transaction per event) and ModRevision the
	// revision that deleted it (after a relist: the list's revision).
	Deleted bool
}

// Cache mirrors every key under a prefix in memory, fed by list+watch, so that hot
// paths read without waiting on etcd.
type Cache[T proto.Message] struct {
	st     *Store
	prefix string
	newT   func() T
	log    *slog.Logger

	mu    sync.RWMutex
	items map[string]Item[T]
	// rev is written under mu and read without it (Revision, on hot paths).
	rev   atomic.Int64
	ready chan struct{}
	once  sync.Once
	// revCh is closed and replaced whenever rev advances, waking WaitRevision.
	revCh chan struct{}
	subs  map[*subscriber[T]]struct{}
	// onEvent, when set, sees every event under the cache's lock (OnEvent).
	onEvent func(Event[T])
}

type subscriber[T proto.Message] struct {
	ch chan Event[T]
	// lost is set when the subscriber fell behind and events were dropped.
	lost bool
}

// NewCache makes a cache of the keys under prefix (use Prefix(...)). Call Run.
func NewCache[T proto.Message](st *Store, prefix string, newT func() T, log *slog.Logger) *Cache[T] {
	if log == nil {
		log = slog.Default()
	}
	return &Cache[T]{
		st: st, prefix: prefix, newT: newT, log: log.With("cache", strings.TrimPrefix(prefix, Root)),
		items: map[string]Item[T]{}, ready: make(chan struct{}), revCh: make(chan struct{}),
		subs: map[*subscriber[T]]struct{}{},
	}
}

// Run lists and watches until ctx ends; it relists after compaction or a broken
// watch. It returns nil when ctx is canceled.
func (c *Cache[T]) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		listed, err := c.listAndWatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listed {
			// The list worked: this break is a new one (etcd lost its leader,
			// a compaction), not the next failure of an outage.
			backoff = 100 * time.Millisecond
		}
		c.log.Warn("cache watch restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// listAndWatch lists the prefix and watches from the list's revision until
// the watch breaks; listed says the list worked.
func (c *Cache[T]) listAndWatch(ctx context.Context) (listed bool, err error) {
	lctx, cancel := c.st.WithTimeout(ctx)
	resp, err := c.st.cli.Get(lctx, c.prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return false, fmt.Errorf("list %s: %w", c.prefix, err)
	}
	fresh := make(map[string]Item[T], len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v := c.newT()
		if err := proto.Unmarshal(kv.Value, v); err != nil {
			c.log.Error("skipping undecodable value", "key", string(kv.Key), "err", err)
			continue
		}
		name := strings.TrimPrefix(string(kv.Key), c.prefix)
		fresh[name] = Item[T]{Name: name, Value: v, ModRevision: kv.ModRevision}
	}
	c.mu.Lock()
	old := c.items
	c.items = fresh
	c.setRevLocked(resp.Header.Revision)
	// Tell subscribers what changed while we were not watching.
	for name, it := range fresh {
		if o, ok := old[name]; !ok || o.ModRevision != it.ModRevision {
			c.publishLocked(Event[T]{Item: it})
		}
	}
	for name, o := range old {
		if _, ok := fresh[name]; !ok {
			// Deleted at or before the list's revision, as a watched delete carries
			// the revision that deleted the key.
			o.ModRevision = resp.Header.Revision
			c.publishLocked(Event[T]{Item: o, Deleted: true})
		}
	}
	c.mu.Unlock()
	c.once.Do(func() { close(c.ready) })

	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	wch := c.st.cli.Watch(wctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithProgressNotify())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return true, fmt.Errorf("watch compacted at %d: %w", wr.CompactRevision, err)
			}
			return true, fmt.Errorf("watch %s: %w", c.prefix, err)
		}
		// Decode before taking the lock: readers on the hot paths wait only for
		// the map updates, not for a whole watch response's unmarshalling.
		changes := make([]change[T], 0, len(wr.Events))
		for _, ev := range wr.Events {
			ch := change[T]{name: strings.TrimPrefix(string(ev.Kv.Key), c.prefix), rev: ev.Kv.ModRevision, deleted: ev.Type == clientv3.EventTypeDelete}
			if !ch.deleted {
				ch.value = c.newT()
				if err := proto.Unmarshal(ev.Kv.Value, ch.value); err != nil {
					c.log.Error("skipping undecodable value", "key", string(ev.Kv.Key), "err", err)
					continue
				}
			}
			changes = append(changes, ch)
		}
		c.mu.Lock()
		for _, ch := range changes {
			if ch.deleted {
				if o, ok := c.items[ch.name]; ok {
					delete(c.items, ch.name)
					o.ModRevision = ch.rev
					c.publishLocked(Event[T]{Item: o, Deleted: true})
				}
				continue
			}
			it := Item[T]{Name: ch.name, Value: ch.value, ModRevision: ch.rev}
			c.items[ch.name] = it
			c.publishLocked(Event[T]{Item: it})
		}
		c.setRevLocked(wr.Header.Revision)
		c.mu.Unlock()
	}
	return true, fmt.Errorf("watch %s closed", c.prefix)
}

// change is one watch event, decoded.
type change[T proto.Message] struct {
	name    string
	value   T
	rev     int64
	deleted bool
}

func (c *Cache[T]) setRevLocked(rev int64) {
	if rev > c.rev.Load() {
		c.rev.Store(rev)
		close(c.revCh)
		c.revCh = make(chan struct{})
	}
}

// OnEvent sets fn to be called with every change the cache applies, synchronously
// and under its lock, before WaitRevision or a reader can see the change: the way
// to keep state derived from the cache (an index) never behind it. The first list
// arrives as events too. fn must be quick and must not call the cache. Set it
// before Run.
func (c *Cache[T]) OnEvent(fn func(Event[T])) { c.onEvent = fn }

func (c *Cache[T]) publishLocked(ev Event[T]) {
	if c.onEvent != nil {
		c.onEvent(ev)
	}
	for s := range c.subs {
		if s.lost {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			// A slow subscriber must not stall the cache: close its stream; it can
			// resubscribe and read a fresh snapshot.
			s.lost = true
			close(s.ch)
		}
	}
}

// WaitReady blocks until the first list has loaded.
func (c *Cache[T]) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitRevision blocks until the cache has seen etcd revision rev, so that a
// read after a write sees the write.
func (c *Cache[T]) WaitRevision(ctx context.Context, rev int64) error {
	for {
		c.mu.RLock()
		cur, ch := c.rev.Load(), c.revCh
		c.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Revision is the etcd revision the cache reflects.
func (c *Cache[T]) Revision() int64 { return c.rev.Load() }

// Get returns the cached value for name (the key without the prefix).
func (c *Cache[T]) Get(name string) (Item[T], bool) {
	c.mu.RLock()
	it, ok := c.items[name]
	c.mu.RUnlock()
	return it, ok
}

// Len is the number of cached keys.
func (c *Cache[T]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.items)
}

// List returns the items that keep returns true for, sorted by name.
func (c *Cache[T]) List(keep func(Item[T]) bool) []Item[T] {
	c.mu.RLock()
	out := make([]Item[T], 0, len(c.items))
	for _, it := range c.items {
		if keep == nil || keep(it) {
			out = append(out, it)
		}
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Subscribe returns the current items and a channel of every later change. The
// channel is closed when cancel is called or when the subscriber falls more than
// buf events behind.
func (c *Cache[T]) Subscribe(buf int) (snapshot []Item[T], events <-chan Event[T], cancel func()) {
	s := &subscriber[T]{ch: make(chan Event[T], buf)}
	c.mu.Lock()
	snapshot = make([]Item[T], 0, len(c.items))
	for _, it := range c.items {
		snapshot = append(snapshot, it)
	}
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	sort.Slice(snapshot, func(i, j int) bool { return snapshot[i].Name < snapshot[j].Name })
	var once sync.Once
	return snapshot, s.ch, func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.subs, s)
			if !s.lost {
				close(s.ch)
			}
			c.mu.Unlock()
		})
	}
}
