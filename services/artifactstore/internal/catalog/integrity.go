package catalog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/services/artifactstore/internal/blobstore"
)

// OpenDigest opens the local blob with digest d (of the artifact name, for
// messages), hashing it first when it was not hashed since this process started.
// A blob that does not match is quarantined: ErrCorrupt. A missing blob is
// ErrNotFound; it is never pulled from an origin here.
func (c *Catalog) OpenDigest(ctx context.Context, name, d string) (*os.File, error) {
	f, err := c.cfg.Blobs.Open(d)
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: content of %q (%s) is missing on this artifactstore", ErrNotFound, name, d)
	}
	if err != nil {
		return nil, err
	}
	if c.cfg.Blobs.Verified(d) {
		return f, nil
	}
	// One check per digest; every first reader waits for it. The check reads its
	// own descriptor of the same file, so what is served is what was hashed.
	ch := c.check.DoChan(d, func() (any, error) {
		return nil, c.verify(context.WithoutCancel(ctx), d, "serve", nil)
	})
	select {
	case <-ctx.Done():
		f.Close()
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			f.Close()
			if errors.Is(res.Err, blobstore.ErrCorrupt) {
				return nil, fmt.Errorf("%w: content of %q failed its sha256 check on this artifactstore and was quarantined; upload it again", ErrCorrupt, name)
			}
			return nil, res.Err
		}
	}
	// The blob may have been quarantined and pulled again between the open and the
	// check: serve only the file that was checked.
	if fi, err := f.Stat(); err == nil {
		if p, perr := c.cfg.Blobs.Path(d); perr == nil {
			if pi, err := os.Stat(p); err != nil || !os.SameFile(fi, pi) {
				f.Close()
				return c.OpenDigest(ctx, name, d)
			}
		}
	}
	return f, nil
}

// verify hashes the blob d now (why: "serve" or "schedule", for the metric) and
// quarantines it when it does not match.
func (c *Catalog) verify(ctx context.Context, d, why string, limit func(int) error) error {
	f, err := c.cfg.Blobs.Open(d)
	if err != nil {
		return err
	}
	err = c.cfg.Blobs.Check(f, d, limit)
	f.Close()
	switch {
	case err == nil:
		c.cfg.Metrics.Verified.WithLabelValues(why, "ok").Inc()
		return nil
	case !errors.Is(err, blobstore.ErrCorrupt):
		return err
	}
	c.cfg.Metrics.Verified.WithLabelValues(why, "corrupt").Inc()
	l := c.shaLock(d)
	l.Lock()
	dst, qerr := c.cfg.Blobs.Quarantine(d)
	l.Unlock()
	if qerr != nil && !errors.Is(qerr, blobstore.ErrNotFound) {
		c.log.Error("blob failed its sha256 check; moving it aside failed", "sha256", d, "err", err, "quarantine_err", qerr)
		return errors.Join(err, qerr)
	}
	c.cfg.Metrics.Quarantined.Inc()
	c.log.Error("blob failed its sha256 check and was quarantined", "sha256", d, "err", err, "moved_to", dst, "check", why)
	return err
}

// VerifyAll hashes every blob on disk once, at most VerifyRate bytes per second,
// spreading the blobs over spread (0: one after another). It returns how many blobs
// were checked and how many were corrupt (and quarantined).
func (c *Catalog) VerifyAll(ctx context.Context, spread time.Duration) (checked, corrupt int, err error) {
	ds, err := c.cfg.Blobs.Digests()
	if err != nil {
		return 0, 0, err
	}
	rand.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	var gap time.Duration
	if len(ds) > 0 {
		gap = spread / time.Duration(len(ds))
	}
	lim := newLimiter(c.cfg.VerifyRate)
	for i, d := range ds {
		if i > 0 && gap > 0 {
			if err := sleep(ctx, gap); err != nil {
				return checked, corrupt, err
			}
		}
		err := c.verify(ctx, d, "schedule", func(n int) error { return lim.wait(ctx, n) })
		switch {
		case err == nil:
			checked++
		case errors.Is(err, blobstore.ErrCorrupt):
			checked++
			corrupt++
		case errors.Is(err, blobstore.ErrNotFound):
			// Dropped since the listing.
		case ctx.Err() != nil:
			return checked, corrupt, ctx.Err()
		default:
			c.log.Warn("scheduled blob check failed", "sha256", d, "err", err)
		}
	}
	return checked, corrupt, nil
}

// verifyLoop checks every blob once per VerifyInterval, starting at a random point
// of the first interval so that instances started together do not read together.
func (c *Catalog) verifyLoop(ctx context.Context) {
	iv := c.cfg.VerifyInterval
	if sleep(ctx, rand.N(iv)) != nil {
		return
	}
	for {
		start := time.Now()
		// Spread over most of the interval, leaving room for the reads themselves.
		checked, corrupt, err := c.VerifyAll(ctx, iv*3/4)
		if ctx.Err() != nil {
			return
		}
		c.log.Info("scheduled blob check done", "checked", checked, "corrupt", corrupt, "duration", time.Since(start), "err", err)
		if sleep(ctx, max(iv-time.Since(start), iv/10)) != nil {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// limiter paces reads to rate bytes per second.
type limiter struct {
	rate  int64
	start time.Time
	n     int64
}

func newLimiter(rate int64) *limiter { return &limiter{rate: rate, start: time.Now()} }

func (l *limiter) wait(ctx context.Context, n int) error {
	l.n += int64(n)
	due := l.start.Add(time.Duration(float64(l.n) / float64(l.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		return sleep(ctx, d)
	}
	return nil
}

// checkTrusted verifies a's signature with the trusted keys (a replica, before it
// pulls or serves). Verified signatures are remembered.
func (c *Catalog) checkTrusted(a *artifactv1.Artifact) error {
	k := a.GetName() + "\n" + a.GetSha256() + "\n" + string(a.GetSignature())
	if _, ok := c.trusted.Load(k); ok {
		return nil
	}
	if _, err := c.cfg.Keys.Verify(a.GetName(), a.GetSha256(), a.GetSignature()); err != nil {
		c.cfg.Metrics.Untrusted.Inc()
		c.log.Warn("refusing an artifact whose signature this replica's keys do not verify", "artifact", a.GetName(), "sha256", a.GetSha256(), "err", err)
		return fmt.Errorf("%w: %q (sha256 %s): %w", ErrUntrusted, a.GetName(), a.GetSha256(), err)
	}
	c.trusted.Store(k, struct{}{})
	return nil
}
