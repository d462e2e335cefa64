package testkit

import (
	"net/http"
	"testing"
	"time"
)

// Wait bounds every wait in this package: generous, because two cores running
// -race tests of four services at once are slow, and a wait that holds returns
// as soon as it holds.
const Wait = 20 * time.Second

// pollEvery is how often a condition is re-checked.
const pollEvery = 10 * time.Millisecond

// Eventually checks cond until it holds; if it does not within Wait, the test
// fails (and stops) with "timed out waiting for <what>".
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Wait, what, cond)
}

// EventuallyWithin is Eventually with its own bound, for a wait the test knows
// must end sooner (a timeout it configured) or may take longer.
func EventuallyWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(within, cond) {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// Poll checks cond until it holds or within has passed and says whether it
// held. It is for tests that report a failure their own way.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
	return true
}

// WaitHTTP waits until a GET of url answers 200: a server that serves only once
// its caches are loaded says so on /healthz.
func WaitHTTP(t testing.TB, url string) {
	t.Helper()
	var last string
	ok := Poll(Wait, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK
	})
	if !ok {
		t.Fatalf("%s not ready after %v: %s", url, Wait, last)
	}
}

// WaitClosed waits until ch is closed, such as a server's Ready channel. If svc
// stops first (its Run failed), or ch stays open for Wait, the test fails.
func WaitClosed(t testing.TB, svc *Service, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-svc.Done():
		t.Fatalf("%s stopped before %s: %v", svc.name, what, svc.err)
	case <-time.After(Wait):
		t.Fatalf("timed out after %v waiting for %s", Wait, what)
	}
}
