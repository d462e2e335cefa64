package httpapi

import (
	"testing"
	"time"
)

func TestAdmission(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	a := newAdmission(AdmissionConfig{Max: 2, Hold: time.Minute, Retry: 5 * time.Second})
	steps := []struct {
		name    string
		do      func() (bool, time.Duration)
		ok      bool
		flights map[string]int
	}{
		{"first of site a", func() (bool, time.Duration) { return a.admit("a", "j1", t0) }, true, map[string]int{"a": 1}},
		{"second of site a", func() (bool, time.Duration) { return a.admit("a", "j2", t0) }, true, map[string]int{"a": 2}},
		{"third of site a waits", func() (bool, time.Duration) { return a.admit("a", "j3", t0) }, false, map[string]int{"a": 2}},
		{"site b has its own cap", func() (bool, time.Duration) { return a.admit("b", "j4", t0) }, true, map[string]int{"a": 2, "b": 1}},
		{"a job asking again keeps its slot", func() (bool, time.Duration) { return a.admit("a", "j1", t0) }, true, map[string]int{"a": 2}},
		{"a report frees a slot", func() (bool, time.Duration) { a.release("j1"); return a.admit("a", "j3", t0) }, true, map[string]int{"a": 2}},
		{"still full", func() (bool, time.Duration) { return a.admit("a", "j5", t0.Add(59*time.Second)) }, false, map[string]int{"a": 2}},
		{"a silent dispatch stops counting after Hold", func() (bool, time.Duration) { return a.admit("a", "j5", t0.Add(time.Minute)) }, true, map[string]int{"a": 1}},
		{"releasing an unknown job is harmless", func() (bool, time.Duration) { a.release("nope"); return true, 0 }, true, map[string]int{"a": 1, "b": 1}},
	}
	for _, st := range steps {
		ok, wait := st.do()
		if ok != st.ok {
			t.Fatalf("%s: admitted %v, want %v", st.name, ok, st.ok)
		}
		if !ok && (wait < 5*time.Second || wait > 10*time.Second) {
			t.Errorf("%s: wait %v, want 5-10 s", st.name, wait)
		}
		for site, n := range st.flights {
			if got := a.inFlight(site); got != n {
				t.Errorf("%s: site %s has %d in flight, want %d", st.name, site, got, n)
			}
		}
	}
}

func TestAdmissionOff(t *testing.T) {
	a := newAdmission(AdmissionConfig{})
	for i := 0; i < 1000; i++ {
		if ok, _ := a.admit("a", string(rune('a'+i%26))+string(rune(i)), time.Now()); !ok {
			t.Fatal("no cap: every dispatch is admitted")
		}
	}
	if a.inFlight("a") != 0 {
		t.Error("no cap: nothing is counted")
	}
}

func TestHeld(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	for name, tc := range map[string]struct {
		release time.Time
		want    time.Duration
	}{
		"no release time":  {time.Time{}, 0},
		"released earlier": {t0.Add(-time.Second), 0},
		"released now":     {t0, 0},
		"held for a wave":  {t0.Add(10 * time.Minute), 10 * time.Minute},
	} {
		if got := held(tc.release, t0); got != tc.want {
			t.Errorf("%s: held %v, want %v", name, got, tc.want)
		}
	}
}
