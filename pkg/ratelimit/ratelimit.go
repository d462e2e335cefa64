// Package ratelimit is keyed token buckets in bounded memory: one bucket per
// client key (a MAC, an IP address), in a fixed-size table that evicts idle keys
// first, so a flood of new keys costs a bounded table, never growing memory.
//
//	l := ratelimit.New[netip.Addr](ratelimit.Config{Limit: ratelimit.Limit{Rate: 50, Burst: 200}})
//	if ok, _ := l.Allow(src.Addr()); !ok { drop() }
//
// Allow is one map access under a sharded mutex, without allocation once a key
// is in the table.
package ratelimit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limit is a sustained rate and a burst: a key may send Burst events at once,
// then Rate per second. A zero Rate is no limit.
type Limit struct {
	// Rate is the events per second allowed over time; 0 is unlimited.
	Rate float64
	// Burst is the events allowed back to back (at least 1 when Rate > 0).
	Burst int
}

// Off reports whether l limits nothing.
func (l Limit) Off() bool { return l.Rate <= 0 }

// String is l in the form ParseLimit reads: "RATE/s,BURST" or "off".
func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	return strconv.FormatFloat(l.Rate, 'g', -1, 64) + "/s," + strconv.Itoa(l.Burst)
}

// ParseLimit reads "RATE/UNIT,BURST" (UNIT s, m or h; "/s" may be left out),
// for example "20/s,100" or "300/m,50", or "off" (also "0") for no limit.
func ParseLimit(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "0" {
		return Limit{}, nil
	}
	r, b, ok := strings.Cut(s, ",")
	if !ok {
		return Limit{}, fmt.Errorf("limit %q: want RATE/s,BURST (for example 20/s,100) or off", s)
	}
	per := time.Second
	if num, unit, ok := strings.Cut(r, "/"); ok {
		switch strings.TrimSpace(unit) {
		case "s":
		case "m":
			per = time.Minute
		case "h":
			per = time.Hour
		default:
			return Limit{}, fmt.Errorf("limit %q: unit %q: want s, m or h", s, unit)
		}
		r = num
	}
	rate, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
	if err != nil || math.IsNaN(rate) || math.IsInf(rate, 0) || rate <= 0 || rate > 1e9 {
		return Limit{}, fmt.Errorf("limit %q: rate: want a number > 0", s)
	}
	burst, err := strconv.Atoi(strings.TrimSpace(b))
	if err != nil || burst < 1 || burst > 1<<30 {
		return Limit{}, fmt.Errorf("limit %q: burst: want an integer >= 1", s)
	}
	return Limit{Rate: rate / per.Seconds(), Burst: burst}, nil
}

// Set makes *Limit a flag.Value.
func (l *Limit) Set(s string) error {
	v, err := ParseLimit(s)
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Config configures a Limiter.
type Config struct {
	Limit
	// Keys is the most keys tracked; default 65536. A full table evicts a key
	// whose bucket has refilled (nothing is lost), else the least recently seen
	// of a few sampled.
	Keys int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

const shards = 64

// evictSample is how many keys a full shard looks at to choose one to evict.
const evictSample = 8

// Limiter is a table of token buckets keyed by K.
type Limiter[K comparable] struct {
	lim    Limit
	per    int // keys per shard
	now    func() time.Time
	epoch  time.Time
	seed   maphash.Seed
	shards [shards]shard[K]

	// Limited counts events refused; Evicted keys evicted from a full table.
	Limited, Evicted atomic.Uint64
}

type shard[K comparable] struct {
	mu sync.Mutex
	m  map[K]bucket
	_  [48]byte // a 64-byte cache line per shard: no false sharing of the mutexes
}

type bucket struct {
	tokens float64
	last   int64 // nanoseconds since the limiter's epoch
}

// New returns a Limiter; with cfg.Limit off, Allow always allows.
func New[K comparable](cfg Config) *Limiter[K] {
	if cfg.Keys <= 0 {
		cfg.Keys = 1 << 16
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	l := &Limiter[K]{lim: cfg.Limit, per: max(1, cfg.Keys/shards), now: cfg.Now, seed: maphash.MakeSeed()}
	l.epoch = l.now()
	return l
}

// Limit is what l allows.
func (l *Limiter[K]) Limit() Limit { return l.lim }

// ErrLimited is the error of a refused event, for callers that want one.
var ErrLimited = errors.New("rate limit exceeded")

// Allow takes one token from k's bucket. When none is left it returns false and
// how long until the next one (for Retry-After).
func (l *Limiter[K]) Allow(k K) (bool, time.Duration) {
	if l == nil || l.lim.Off() {
		return true, 0
	}
	now := int64(l.now().Sub(l.epoch))
	sh := &l.shards[maphash.Comparable(l.seed, k)%shards]
	burst := float64(l.lim.Burst)
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[K]bucket)
	}
	b, ok := sh.m[k]
	if !ok {
		if len(sh.m) >= l.per {
			l.evict(sh, now)
		}
		b = bucket{tokens: burst, last: now}
	} else if now > b.last {
		b.tokens = min(burst, l.refilled(b, now))
		b.last = now
	}
	allowed := b.tokens >= 1
	var wait time.Duration
	if allowed {
		b.tokens--
	} else {
		wait = time.Duration((1 - b.tokens) / l.lim.Rate * 1e9)
	}
	sh.m[k] = b
	sh.mu.Unlock()
	if !allowed {
		l.Limited.Add(1)
	}
	return allowed, wait
}

// Len is the number of keys tracked.
func (l *Limiter[K]) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// refilled is b's tokens at now, uncapped: what it held plus what the rate
// has added since it was last seen.
func (l *Limiter[K]) refilled(b bucket, now int64) float64 {
	return b.tokens + float64(now-b.last)*l.lim.Rate/1e9
}

// evict removes one key of a full shard: the first sampled whose bucket has
// refilled (it would start full anyway), else the least recently seen sampled.
func (l *Limiter[K]) evict(sh *shard[K], now int64) {
	var victim K
	oldest, seen := int64(math.MaxInt64), 0
	for k, b := range sh.m {
		if l.refilled(b, now) >= float64(l.lim.Burst) {
			victim = k
			break
		}
		if b.last < oldest {
			victim, oldest = k, b.last
		}
		if seen++; seen >= evictSample {
			break
		}
	}
	delete(sh.m, victim)
	l.Evicted.Add(1)
}
