package httpapi

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// AdmissionConfig caps the boots a site has in flight: jobs dispatched whose
// installer has not reported yet. That stretch of a boot is its kernel and
// initrd downloads, so the cap also bounds a site's concurrent downloads from
// its artifactstore. A machine over the cap gets a short script that waits
// and asks again (script.Wait), with jitter, instead of its job; its job stays
// pending. The zero value is off.
//
// The count is this bootapi's: with several replicas behind one address, a
// site may have up to replicas x Max boots in flight.
type AdmissionConfig struct {
	// Max boots in flight per site; 0 is no cap.
	Max int
	// Hold is how long a dispatch counts without a report (a machine that
	// died after its dispatch frees its slot then); default 5 minutes.
	Hold time.Duration
	// Retry is the shortest wait of a machine over the cap; each waits
	// between Retry and twice Retry, at random. Default 5 s.
	Retry time.Duration
}

func (c AdmissionConfig) withDefaults() AdmissionConfig {
	if c.Hold <= 0 {
		c.Hold = 5 * time.Minute
	}
	if c.Retry <= 0 {
		c.Retry = 5 * time.Second
	}
	return c
}

// admission counts the boots in flight per site. A nil *admission is never
// created: New always makes one, off when Max is 0 (Retry still sets the
// jitter of held jobs).
type admission struct {
	cfg AdmissionConfig

	mu    sync.Mutex
	sites map[string]map[string]time.Time // site -> job -> dispatch time
	jobs  map[string]string               // job -> site
}

func newAdmission(cfg AdmissionConfig) *admission {
	return &admission{cfg: cfg.withDefaults(), sites: map[string]map[string]time.Time{}, jobs: map[string]string{}}
}

// admit takes a slot of site for job, or reports how long the machine should
// wait before asking again. With no cap it always admits and records nothing.
func (a *admission) admit(site, job string, now time.Time) (ok bool, wait time.Duration) {
	if a == nil || a.cfg.Max <= 0 {
		return true, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	inFlight := a.sites[site]
	if _, again := inFlight[job]; again {
		return true, 0
	}
	if len(inFlight) >= a.cfg.Max {
		for j, t := range inFlight {
			if now.Sub(t) >= a.cfg.Hold {
				delete(inFlight, j)
				delete(a.jobs, j)
			}
		}
	}
	if len(inFlight) >= a.cfg.Max {
		return false, a.cfg.Retry + rand.N(a.cfg.Retry+1)
	}
	if inFlight == nil {
		inFlight = map[string]time.Time{}
		a.sites[site] = inFlight
	}
	inFlight[job] = now
	a.jobs[job] = site
	return true, 0
}

// release frees job's slot: its installer reported, or its dispatch did not
// happen.
func (a *admission) release(job string) {
	if a == nil || a.cfg.Max <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	site, ok := a.jobs[job]
	if !ok {
		return
	}
	delete(a.jobs, job)
	delete(a.sites[site], job)
	if len(a.sites[site]) == 0 {
		delete(a.sites, site)
	}
}

// inFlight is the number of boots in flight at site, for metrics and tests.
func (a *admission) inFlight(site string) int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sites[site])
}

// admitRule is the scripts metric's rule for a machine told to wait.
const admitRule = "admission-wait"

// maxHoldWait is the longest a machine whose job is held until its release
// time sleeps before asking again, so that it notices a job cancelled or
// replaced in the meantime.
const maxHoldWait = time.Minute

// held is how long the job is held before its release time (its wave), or 0.
func held(releaseTime time.Time, now time.Time) time.Duration {
	if releaseTime.IsZero() || !now.Before(releaseTime) {
		return 0
	}
	return releaseTime.Sub(now)
}

// admit takes a slot of the job's site, or renders the script that has the
// machine wait and ask again (waiting true): while its job is held until its
// release time, or while its site is at its cap of boots in flight.
func (h *Handler) admit(d decide.Decision, mac, ip string) (s script.Script, waiting bool) {
	site := d.Site.GetName()
	now := h.cfg.Now()
	var release time.Time
	if rt := d.Job.GetReleaseTime(); rt != nil {
		release = rt.AsTime()
	}
	var wait time.Duration
	var detail string
	if left := held(release, now); left > 0 {
		// Jitter, so that a wave's machines do not all ask at its first second.
		wait = min(left, maxHoldWait) + rand.N(h.admission.cfg.Retry+1)
		detail = fmt.Sprintf("waiting %s: job %s is held until %s", wait.Round(time.Second), d.Job.GetId(), release.UTC().Format(time.RFC3339))
	} else {
		ok, w := h.admission.admit(site, d.Job.GetId(), now)
		if ok {
			return script.Script{}, false
		}
		wait = w
		detail = fmt.Sprintf("waiting %s: site %q has %d boots in flight, its cap", wait.Round(time.Second), site, h.cfg.Admission.Max)
	}
	h.metrics.scripts.WithLabelValues(admitRule).Inc()
	body, err := script.Wait(h.rendererFor(ip).ConfigURL(), mac, wait)
	if err != nil {
		h.log.Error("wait script not rendered", "mac", mac, "err", err)
		body = script.Failure(mac, "bootapi cannot render its wait script")
	}
	return script.Script{Body: body, Detail: detail}, true
}
