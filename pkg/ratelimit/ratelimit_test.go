package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Unix(1e9, 0)} }

func TestBurstThenRate(t *testing.T) {
	c := newClock()
	l := New[string](Config{Limit: Limit{Rate: 2, Burst: 5}, Now: c.Now})
	for i := 0; i < 5; i++ {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("6th event: allowed %v, retry after %v; want refused, 500ms", ok, wait)
	}
	// Another key has its own bucket.
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("other key refused")
	}
	c.Add(500 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refilled token refused")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("second event after one refill allowed")
	}
	// Refill never exceeds the burst.
	c.Add(time.Hour)
	n := 0
	for {
		if ok, _ := l.Allow("a"); !ok {
			break
		}
		n++
	}
	if n != 5 {
		t.Fatalf("after an hour idle %d events allowed, want the burst 5", n)
	}
	if got := l.Limited.Load(); got != 3 {
		t.Fatalf("Limited = %d, want 3", got)
	}
}

func TestOffAllowsAll(t *testing.T) {
	l := New[int](Config{})
	for i := 0; i < 1000; i++ {
		if ok, _ := l.Allow(1); !ok {
			t.Fatal("an off limiter refused")
		}
	}
	if l.Len() != 0 {
		t.Fatalf("an off limiter tracks %d keys", l.Len())
	}
	var nl *Limiter[int]
	if ok, _ := nl.Allow(1); !ok {
		t.Fatal("nil limiter refused")
	}
}

// A flood of new keys keeps the table at its size, and a busy key that is
// over its limit stays limited while idle keys are evicted around it.
func TestBoundedTable(t *testing.T) {
	c := newClock()
	l := New[string](Config{Limit: Limit{Rate: 1, Burst: 2}, Keys: 64 * 4, Now: c.Now})
	for i := 0; i < 2; i++ {
		l.Allow("busy")
	}
	if ok, _ := l.Allow("busy"); ok {
		t.Fatal("busy key not limited")
	}
	for i := 0; i < 100000; i++ {
		l.Allow(fmt.Sprint("k", i))
		// The flood's keys refill (go idle) as time passes; the busy key keeps
		// asking and stays empty.
		if i%10 == 0 {
			c.Add(time.Second)
			l.Allow("busy")
			l.Allow("busy")
		}
	}
	if n := l.Len(); n > 64*4 {
		t.Fatalf("table holds %d keys, want <= %d", n, 64*4)
	}
	if l.Evicted.Load() == 0 {
		t.Fatal("nothing evicted")
	}
	if ok, _ := l.Allow("busy"); ok {
		t.Fatal("busy key evicted and given a fresh burst")
	}
}

func TestConcurrent(t *testing.T) {
	l := New[int](Config{Limit: Limit{Rate: 1e-6, Burst: 10}, Keys: 128})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < 1000; i++ {
				if ok, _ := l.Allow(7); ok {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if allowed != 10 {
		t.Fatalf("%d events allowed across goroutines, want the burst 10", allowed)
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]Limit{
		"20/s,100": {Rate: 20, Burst: 100}, "20,100": {Rate: 20, Burst: 100}, "120/m,5": {Rate: 2, Burst: 5},
		"3600/h,1": {Rate: 1, Burst: 1}, "off": {}, "0": {}, " 0.5/s , 2 ": {Rate: 0.5, Burst: 2},
	} {
		got, err := ParseLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "20", "20/d,1", "x,1", "-1,1", "1,0", "NaN,1", "Inf,1", "1,x", "1e10,1"} {
		if l, err := ParseLimit(in); err == nil {
			t.Errorf("ParseLimit(%q) = %+v, want an error", in, l)
		}
	}
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"20/s,100", "120/m,5", "off", "0", "1e9,1", "1/h,1073741824", ",", "/,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLimit(s)
		if err != nil {
			return
		}
		if !l.Off() && (l.Rate <= 0 || l.Burst < 1) {
			t.Fatalf("ParseLimit(%q) = %+v", s, l)
		}
		// What String prints parses back to the same limit.
		back, err := ParseLimit(l.String())
		if err != nil || (back.Off() != l.Off()) || (!l.Off() && back.Burst != l.Burst) {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, l, l.String(), back, err)
		}
		lim := New[string](Config{Limit: l, Keys: 1})
		lim.Allow("a")
	})
}
