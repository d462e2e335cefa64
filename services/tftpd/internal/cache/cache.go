// Package cache keeps tftpd's local copies of artifacts on disk, by sha256.
//
// Blobs live in <dir>/blobs/<sha256>; <dir>/index.json maps artifact names to them so
// that a restarted tftpd serves what it had even when artifactstore is down. A blob is
// hashed again before its first use in a process; a mismatch drops it. An artifact
// reported changed (by the etcd watch) is marked stale and fetched again in the
// background; until the new content is verified the old one is served, and when
// artifactstore is unreachable the cached copy keeps being served.
package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/bootchain/bootchain/services/tftpd/internal/source"
	"golang.org/x/sync/singleflight"
)

// Errors; compare with errors.Is.
var (
	// ErrNotCached: Evict of a name the cache does not hold.
	ErrNotCached = errors.New("not in cache")
	// ErrCorrupt: content did not match its sha256.
	ErrCorrupt = errors.New("content does not match sha256")
	// errBehind: artifactstore does not serve the content etcd announced yet.
	errBehind = errors.New("artifactstore behind etcd")
)

// Config configures a Cache.
type Config struct {
	// Dir holds blobs/ and index.json. Required.
	Dir string
	// Source of artifacts. Required.
	Source source.Source
	// FetchTimeout bounds fetching an artifact not cached yet; default 20s.
	FetchTimeout time.Duration
	// RefreshWait bounds how long a request for a stale entry waits for the new
	// content before the old one is served; default 1s.
	RefreshWait time.Duration
	// RetryInterval: stale entries whose refresh failed are retried this often;
	// default 2s.
	RetryInterval time.Duration
	// MemoryBudget: blobs are also held in memory, up to this many bytes in all, so
	// a transfer reads no file per block; default 256 MiB. Larger ones are read
	// from disk.
	MemoryBudget int64
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Entry is what the cache knows about one artifact (a copy).
type Entry struct {
	Name      string    `json:"name"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	FetchTime time.Time `json:"fetch_time"`
	LastUsed  time.Time `json:"last_used"`
	Verified  bool      `json:"-"`
	Stale     bool      `json:"-"`
	Hits      int64     `json:"-"`
	// Want is the digest etcd announced with the change that made the entry stale
	// ("" when not known: deleted, or a gap in the watch). artifactstore's answers
	// can lag etcd by a moment; until it reports this content the entry stays stale
	// and is retried.
	Want string `json:"-"`
}

type blob struct {
	sha      string
	size     int64
	f        *os.File
	data     []byte // the content, when held in memory
	verified bool
	names    int // entries pointing here
	refs     int // open handles
}

// Cache is the on-disk artifact cache. Safe for concurrent use.
type Cache struct {
	cfg Config
	log *slog.Logger
	sf  singleflight.Group

	mu      sync.Mutex
	entries map[string]*Entry
	blobs   map[string]*blob
	inMem   int64 // bytes of blob data held in memory
	kick    chan struct{}
}

// New opens (creating) the cache folder and loads its index; blobs are verified on
// first use.
func New(cfg Config) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: no folder")
	}
	if cfg.Source == nil {
		return nil, errors.New("cache: no source")
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 20 * time.Second
	}
	if cfg.RefreshWait <= 0 {
		cfg.RefreshWait = time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if cfg.MemoryBudget == 0 {
		cfg.MemoryBudget = 256 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "blobs"), 0o750); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{
		cfg: cfg, log: cfg.Logger.With("component", "cache"),
		entries: map[string]*Entry{}, blobs: map[string]*blob{}, kick: make(chan struct{}, 1),
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cache) indexPath() string          { return filepath.Join(c.cfg.Dir, "index.json") }
func (c *Cache) blobPath(sha string) string { return filepath.Join(c.cfg.Dir, "blobs", sha) }

func (c *Cache) load() error {
	b, err := os.ReadFile(c.indexPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cache: read index: %w", err)
	}
	var list []*Entry
	if err := json.Unmarshal(b, &list); err != nil {
		// A broken index loses the cache, not the service.
		c.log.Warn("cache index unreadable; starting empty", "err", err)
		return nil
	}
	for _, e := range list {
		if e.Name == "" || !validSHA(e.SHA256) {
			continue
		}
		st, err := os.Stat(c.blobPath(e.SHA256))
		if err != nil || st.Size() != e.Size {
			continue
		}
		c.entries[e.Name] = e
		c.blobLocked(e.SHA256, e.Size).names++
	}
	return nil
}

func validSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func (c *Cache) blobLocked(sha string, size int64) *blob {
	b := c.blobs[sha]
	if b == nil {
		b = &blob{sha: sha, size: size}
		c.blobs[sha] = b
	}
	return b
}

// saveLocked writes the index atomically.
func (c *Cache) saveLocked() {
	list := make([]*Entry, 0, len(c.entries))
	for _, e := range c.entries {
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	b, err := json.MarshalIndent(list, "", "  ")
	if err == nil {
		tmp := c.indexPath() + ".tmp"
		if err = os.WriteFile(tmp, b, 0o640); err == nil {
			err = os.Rename(tmp, c.indexPath())
		}
	}
	if err != nil {
		c.log.Warn("cache index not saved", "err", err)
	}
}

// Handle is an open cached artifact. Close it when the transfer ends.
type Handle struct {
	// Reader reads the content from the start; it is also an io.Seeker.
	Reader io.ReadSeeker
	Name   string
	SHA256 string
	Size   int64
	c      *Cache
	b      *blob
	once   sync.Once
}

// Bytes is a handle on content made for one transfer (a GRUB config bootapi
// rendered for the machine): not cached, nothing to release.
func Bytes(name string, data []byte) *Handle {
	sum := sha256.Sum256(data)
	return &Handle{Reader: bytes.NewReader(data), Name: name, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
}

// Close releases the handle.
func (h *Handle) Close() error {
	if h.c == nil {
		return nil
	}
	h.once.Do(func() {
		h.c.mu.Lock()
		h.b.refs--
		h.c.releaseLocked(h.b)
		h.c.mu.Unlock()
	})
	return nil
}

// releaseLocked deletes a blob no entry and no handle uses.
func (c *Cache) releaseLocked(b *blob) {
	if b.names > 0 || b.refs > 0 {
		return
	}
	if b.f != nil {
		b.f.Close()
	}
	c.inMem -= int64(len(b.data))
	b.data = nil
	if c.blobs[b.sha] == b {
		delete(c.blobs, b.sha)
		os.Remove(c.blobPath(b.sha))
	}
}

// Open returns the artifact's content, fetching it first when it is not cached. hit
// reports whether it was served without waiting for the source.
func (c *Cache) Open(ctx context.Context, name string) (h *Handle, hit bool, err error) {
	c.mu.Lock()
	e := c.entries[name]
	stale := e != nil && e.Stale
	c.mu.Unlock()
	hit = e != nil
	switch {
	case e == nil:
		fctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
		err := c.refresh(fctx, name, true)
		cancel()
		if err != nil {
			return nil, false, err
		}
	case stale:
		// Give the new content a moment; serve the old one if it does not come.
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshWait)
		err := c.refresh(rctx, name, false)
		cancel()
		if errors.Is(err, source.ErrNotFound) {
			return nil, false, err
		}
		if err != nil {
			c.log.Info("serving cached copy; refresh failed", "artifact", name, "err", err)
		}
	}
	for attempt := 0; attempt < 3; attempt++ {
		h, err = c.open(name)
		if err == nil || !errors.Is(err, ErrCorrupt) {
			return h, hit, err
		}
		// The blob on disk was bad and is gone now: fetch it again.
		hit = false
		fctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
		err = c.refresh(fctx, name, true)
		cancel()
		if err != nil {
			return nil, false, err
		}
	}
	return nil, false, err
}

// open opens the cached blob of name, verifying it on its first use.
func (c *Cache) open(name string) (*Handle, error) {
	c.mu.Lock()
	e := c.entries[name]
	if e == nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", source.ErrNotFound, name)
	}
	b := c.blobs[e.SHA256]
	b.refs++ // keeps b alive while verifying
	c.mu.Unlock()
	if err := c.verify(b); err != nil {
		c.mu.Lock()
		b.refs--
		if cur := c.entries[name]; cur != nil && cur.SHA256 == b.sha {
			delete(c.entries, name)
			b.names--
			c.saveLocked()
		}
		c.releaseLocked(b)
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Lock()
	e.LastUsed = time.Now()
	e.Hits++
	e.Verified = true
	f, data := b.f, b.data
	c.mu.Unlock()
	var r io.ReadSeeker = io.NewSectionReader(f, 0, b.size)
	if data != nil {
		r = bytes.NewReader(data)
	}
	return &Handle{Reader: r, Name: name, SHA256: b.sha, Size: b.size, c: c, b: b}, nil
}

// verify hashes the blob once per process and keeps it open.
func (c *Cache) verify(b *blob) error {
	c.mu.Lock()
	ok := b.verified
	c.mu.Unlock()
	if ok {
		return nil
	}
	_, err, _ := c.sf.Do("verify:"+b.sha, func() (any, error) {
		c.mu.Lock()
		done := b.verified
		c.mu.Unlock()
		if done {
			return nil, nil
		}
		f, err := os.Open(c.blobPath(b.sha))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		h := sha256.New()
		var mem *bytes.Buffer
		w := io.Writer(h)
		if c.reserve(b.size) {
			mem = bytes.NewBuffer(make([]byte, 0, b.size))
			w = io.MultiWriter(h, mem)
		}
		n, err := io.Copy(w, io.LimitReader(f, b.size+1))
		if err != nil || n != b.size || hex.EncodeToString(h.Sum(nil)) != b.sha {
			f.Close()
			if mem != nil {
				c.unreserve(b.size)
			}
			c.log.Warn("cached blob failed verification; dropping it", "sha256", b.sha, "size", n, "want_size", b.size, "err", err)
			return nil, fmt.Errorf("%w: blob %s", ErrCorrupt, b.sha)
		}
		c.mu.Lock()
		b.f, b.verified = f, true
		if mem != nil {
			b.data = mem.Bytes()
		}
		c.mu.Unlock()
		return nil, nil
	})
	return err
}

// refresh makes the entry for name current: it asks the source for the metadata and
// fetches the content when the sha256 differs from the cached one (or always, when
// nothing is cached or force). Concurrent calls for a name share one fetch.
func (c *Cache) refresh(ctx context.Context, name string, force bool) error {
	ch := c.sf.DoChan("fetch:"+name, func() (any, error) {
		// The fetch outlives one impatient caller: bound it by FetchTimeout, not by
		// the caller's context.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.FetchTimeout)
		defer cancel()
		return nil, c.doRefresh(fctx, name, force)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cache) doRefresh(ctx context.Context, name string, force bool) error {
	c.mu.Lock()
	cur := c.entries[name]
	want := ""
	if cur != nil {
		want = cur.Want
	}
	c.mu.Unlock()
	if cur != nil && !force {
		m, err := c.cfg.Source.Stat(ctx, name)
		switch {
		case errors.Is(err, source.ErrNotFound) && want != "":
			return fmt.Errorf("%w: %s: artifactstore does not have it yet, etcd says %s", errBehind, name, short(want))
		case errors.Is(err, source.ErrNotFound):
			c.drop(name, cur.SHA256)
			return err
		case err != nil:
			return err
		case m.SHA256 == cur.SHA256:
			c.mu.Lock()
			want = cur.Want
			cur.Stale = cur.behind()
			behind := cur.Stale
			c.mu.Unlock()
			if behind {
				return fmt.Errorf("%w: %s: artifactstore still has %s, etcd says %s", errBehind, name, short(m.SHA256), short(want))
			}
			return nil
		}
	}
	return c.fetch(ctx, name)
}

func (c *Cache) fetch(ctx context.Context, name string) error {
	tmp, err := os.CreateTemp(filepath.Join(c.cfg.Dir, "blobs"), ".fetch-*")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	m, err := c.cfg.Source.Fetch(ctx, name, cw)
	if err != nil {
		if errors.Is(err, source.ErrNotFound) {
			c.mu.Lock()
			cur := c.entries[name]
			announced := cur != nil && cur.Want != ""
			c.mu.Unlock()
			if cur != nil && !announced {
				c.drop(name, cur.SHA256)
			}
		}
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if m.SHA256 != "" && m.SHA256 != sum || m.Size != cw.n {
		return fmt.Errorf("fetch %s: %w: got %s (%d bytes), source says %s (%d bytes)", name, ErrCorrupt, sum, cw.n, m.SHA256, m.Size)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.blobs[sum]; b == nil || !b.verified {
		// Replace any unverified copy of the same content.
		if err := os.Rename(tmp.Name(), c.blobPath(sum)); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
		if b != nil && b.f != nil {
			b.f.Close()
			b.f = nil
		}
	}
	b := c.blobLocked(sum, cw.n)
	if !b.verified {
		f, err := os.Open(c.blobPath(sum))
		if err != nil {
			return fmt.Errorf("cache: %w", err)
		}
		b.f, b.verified = f, true
		if c.inMem+cw.n <= c.cfg.MemoryBudget {
			if data, err := io.ReadAll(io.NewSectionReader(f, 0, cw.n)); err == nil && int64(len(data)) == cw.n {
				b.data = data
				c.inMem += cw.n
			}
		}
	}
	now := time.Now()
	e := &Entry{Name: name, SHA256: sum, Size: cw.n, FetchTime: now, Verified: true}
	if old := c.entries[name]; old != nil {
		if old.SHA256 == sum {
			old.FetchTime, old.Verified = now, true
			old.Stale = old.behind()
			c.saveLocked()
			return nil
		}
		ob := c.blobs[old.SHA256]
		ob.names--
		c.releaseLocked(ob)
		// Fetched something between the old and the announced content: still stale.
		e.Want = old.Want
		e.Stale = e.behind()
	}
	b.names++
	c.entries[name] = e
	c.saveLocked()
	c.log.Info("artifact cached", "artifact", name, "sha256", sum, "size", cw.n)
	return nil
}

// drop forgets name if it still points at sha (the artifact was deleted upstream).
func (c *Cache) drop(name, sha string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[name]
	if e == nil || e.SHA256 != sha {
		return
	}
	delete(c.entries, name)
	b := c.blobs[sha]
	b.names--
	c.releaseLocked(b)
	c.saveLocked()
	c.log.Info("artifact gone upstream; dropped from cache", "artifact", name)
}

// behind reports whether etcd announced content other than the entry's.
func (e *Entry) behind() bool { return e.Want != "" && e.Want != e.SHA256 }

// short is a digest's first 12 hex digits, for messages.
func short(sha string) string { return sha[:min(len(sha), 12)] }

type countWriter struct {
	w io.Writer
	n int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}

// Changed marks a cached artifact stale (etcd reported a change) and refreshes it
// in the background. want is the new content's digest as etcd has it ("" when
// deleted or not known); the entry stays stale until artifactstore serves that
// content. Names not cached are ignored.
func (c *Cache) Changed(name, want string) {
	c.mu.Lock()
	e := c.entries[name]
	if e != nil {
		e.Stale, e.Want = true, want
	}
	c.mu.Unlock()
	if e != nil {
		c.poke()
	}
}

// ChangedAll marks every entry stale (after a watch gap).
func (c *Cache) ChangedAll() {
	c.mu.Lock()
	for _, e := range c.entries {
		e.Stale, e.Want = true, ""
	}
	c.mu.Unlock()
	c.poke()
}

func (c *Cache) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Warm fetches the named artifacts that are not cached yet (best effort).
func (c *Cache) Warm(ctx context.Context, names []string) {
	for _, n := range names {
		c.mu.Lock()
		_, ok := c.entries[n]
		c.mu.Unlock()
		if ok {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
		err := c.refresh(fctx, n, true)
		cancel()
		if err != nil && !errors.Is(err, source.ErrNotFound) && ctx.Err() == nil {
			c.log.Debug("warming cache", "artifact", n, "err", err)
		}
	}
}

// Run refreshes stale entries until ctx ends: at once when poked, and every
// RetryInterval while some refresh keeps failing.
func (c *Cache) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.close()
			return nil
		case <-c.kick:
		case <-t.C:
		}
		for _, name := range c.staleNames() {
			if ctx.Err() != nil {
				break
			}
			if err := c.refresh(ctx, name, false); err != nil && ctx.Err() == nil {
				c.log.Debug("refresh failed; will retry", "artifact", name, "err", err)
			}
		}
	}
}

func (c *Cache) staleNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n, e := range c.entries {
		if e.Stale {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func (c *Cache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.blobs {
		if b.refs == 0 && b.f != nil {
			b.f.Close()
			c.inMem -= int64(len(b.data))
			b.f, b.data, b.verified = nil, nil, false
		}
	}
}

// reserve books n bytes of the memory budget.
func (c *Cache) reserve(n int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inMem+n > c.cfg.MemoryBudget {
		return false
	}
	c.inMem += n
	return true
}

func (c *Cache) unreserve(n int64) {
	c.mu.Lock()
	c.inMem -= n
	c.mu.Unlock()
}

// List returns copies of every entry, sorted by name.
func (c *Cache) List() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Evict drops name from the cache; running transfers finish with the old content.
func (c *Cache) Evict(name string) (Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[name]
	if e == nil {
		return Entry{}, fmt.Errorf("%w: %s", ErrNotCached, name)
	}
	delete(c.entries, name)
	b := c.blobs[e.SHA256]
	b.names--
	c.releaseLocked(b)
	c.saveLocked()
	return *e, nil
}

// SHA256 returns the cached content's sha256 for name.
func (c *Cache) SHA256(name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[name]
	if e == nil {
		return "", false
	}
	return e.SHA256, true
}

// Names lists the cached artifact names.
func (c *Cache) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.entries))
	for n := range c.entries {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
