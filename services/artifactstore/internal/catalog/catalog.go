// Package catalog is artifactstore's core: artifact metadata in etcd (fed to an
// in-memory cache by list+watch), contents in a local blobstore, and, on a site
// replica, pull-through from the origin artifactstore.
//
// The order of writes is what keeps half an artifact from ever being served: the
// blob is complete, verified and durable on disk before the metadata that points at
// it is written, and the metadata is the only way to reach a blob.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/pkg/artifactref"
	"github.com/bootchain/bootchain/pkg/artifactsig"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/artifactstore/internal/blobstore"
	"github.com/bootchain/bootchain/services/artifactstore/internal/name"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultContentType is stored when an upload names none.
const DefaultContentType = "application/octet-stream"

// Errors; the gRPC and HTTP layers map them to statuses.
var (
	ErrNotFound   = errors.New("artifact not found")
	ErrReferenced = errors.New("artifact referenced by profiles")
	ErrOrigin     = errors.New("origin artifactstore")
	// ErrOriginUnreachable: the origin did not answer (a site cut off from
	// the core); it wraps ErrOrigin. Retry later.
	ErrOriginUnreachable = errors.New("origin unreachable")
	// ErrExists: the name holds other content and the request did not name it.
	ErrExists = errors.New("artifact exists")
	// ErrStale: the request named a sha256 the artifact no longer has.
	ErrStale = errors.New("artifact changed")
	// ErrCorrupt: the content on disk failed its sha256 check and was quarantined.
	ErrCorrupt = errors.New("artifact content corrupt")
	// ErrUntrusted: a replica's trusted keys do not verify the artifact's signature.
	ErrUntrusted = errors.New("artifact signature not trusted")
)

// originErr wraps an error of a call to the origin: ErrOriginUnreachable when
// the origin did not answer (no connection, or none within the deadline),
// else ErrOrigin (it answered wrongly).
func originErr(op, name string, err error) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		// gRPC reports a refused TLS handshake (an origin certificate this
		// replica does not trust) as Unavailable too: that is a wrong
		// answer, which waiting does not mend.
		if !strings.Contains(err.Error(), "authentication handshake failed") {
			return fmt.Errorf("%w: %w: %s %q: %w", ErrOrigin, ErrOriginUnreachable, op, name, err)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w: %s %q: %w", ErrOrigin, ErrOriginUnreachable, op, name, err)
	}
	return fmt.Errorf("%w: %s %q: %w", ErrOrigin, op, name, err)
}

// FieldError is a request field that is wrong.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error) error { return &FieldError{Field: field, Err: err} }

// Config configures a Catalog.
type Config struct {
	// Store is the etcd store. Required.
	Store *store.Store
	// Blobs is the local content store. Required.
	Blobs *blobstore.Store
	// Site recorded as origin_site of uploads.
	Site string
	// Origin, on a replica, is the origin artifactstore pulled from; nil on an origin.
	Origin artifactv1.ArtifactServiceClient
	// FetchTimeout bounds one pull from the origin; default 30m.
	FetchTimeout time.Duration
	// RemoteTTL: how long a replica trusts metadata it got from the origin when its
	// own etcd has none (a replica with a separate etcd); default 30s.
	RemoteTTL time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Metrics; default a fresh unregistered set.
	Metrics *Metrics
	// Keys, when it has any, makes uploads carry a signature these keys verify,
	// and a replica check the signature of what it serves.
	Keys *artifactsig.Keyring
	// VerifyInterval: every blob on disk is hashed again once per interval, the
	// checks spread over it; 0 turns the schedule off (blobs are still checked
	// the first time they are served after a start).
	VerifyInterval time.Duration
	// VerifyRate bounds the scheduled checks' reads, in bytes per second; default
	// 32 MiB/s.
	VerifyRate int64
}

// Catalog serves artifacts.
type Catalog struct {
	cfg   Config
	log   *slog.Logger
	cache *store.Cache[*artifactv1.Artifact]
	fetch singleflight.Group
	// check runs one sha256 check per digest however many first readers wait.
	check singleflight.Group
	// trusted caches signatures a replica verified: "<name>\n<sha256>\n<sig>".
	trusted sync.Map
	// shaLocks serializes "write blob + its metadata" with "drop an unreferenced
	// blob" for the same digest.
	shaLocks [64]sync.Mutex

	mu     sync.Mutex
	remote map[string]remoteEntry
}

type remoteEntry struct {
	a    *artifactv1.Artifact
	when time.Time
}

// New returns a Catalog; call Run.
func New(cfg Config) (*Catalog, error) {
	if cfg.Store == nil || cfg.Blobs == nil {
		return nil, errors.New("catalog: store and blobs are required")
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 30 * time.Minute
	}
	if cfg.RemoteTTL == 0 {
		cfg.RemoteTTL = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.VerifyRate <= 0 {
		cfg.VerifyRate = 32 << 20
	}
	return &Catalog{
		cfg: cfg, log: cfg.Logger,
		cache:  store.NewCache(cfg.Store, store.Prefix("artifacts"), func() *artifactv1.Artifact { return &artifactv1.Artifact{} }, cfg.Logger),
		remote: map[string]remoteEntry{},
	}, nil
}

// Metrics are the catalog's counters.
func (c *Catalog) Metrics() *Metrics { return c.cfg.Metrics }

// Run feeds the metadata cache and drops blobs no artifact refers to any more,
// until ctx ends.
func (c *Catalog) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { c.cache.Run(ctx); close(done) }()
	defer func() { <-done }()
	if err := c.cache.WaitReady(ctx); err != nil {
		return nil
	}
	if c.cfg.VerifyInterval > 0 {
		vdone := make(chan struct{})
		go func() { defer close(vdone); c.verifyLoop(ctx) }()
		defer func() { <-vdone }()
	}
	return c.collect(ctx)
}

// collect follows metadata changes; when a digest loses its last name, its blob goes.
func (c *Catalog) collect(ctx context.Context) error {
	var shas map[string]string
	return c.cache.Follow(ctx, 1024, func(snap []store.Item[*artifactv1.Artifact]) error {
		shas = make(map[string]string, len(snap))
		for _, it := range snap {
			shas[it.Name] = it.Value.GetSha256()
		}
		return nil
	}, func(batch []store.Event[*artifactv1.Artifact]) error {
		for _, ev := range batch {
			old := shas[ev.Name]
			if ev.Deleted {
				delete(shas, ev.Name)
				old = ev.Value.GetSha256()
			} else {
				shas[ev.Name] = ev.Value.GetSha256()
				if old == ev.Value.GetSha256() {
					continue
				}
			}
			if old != "" {
				c.dropIfUnreferenced(old)
			}
		}
		return nil
	})
}

func (c *Catalog) shaLock(d string) *sync.Mutex {
	var h byte
	if len(d) >= 2 {
		h = d[0] ^ d[1]
	}
	return &c.shaLocks[int(h)%len(c.shaLocks)]
}

func (c *Catalog) dropIfUnreferenced(d string) {
	l := c.shaLock(d)
	l.Lock()
	defer l.Unlock()
	if len(c.cache.List(func(it store.Item[*artifactv1.Artifact]) bool { return it.Value.GetSha256() == d })) > 0 {
		return
	}
	if err := c.cfg.Blobs.Remove(d); err != nil {
		c.log.Warn("could not remove unreferenced blob", "sha256", d, "err", err)
		return
	}
	c.log.Debug("removed unreferenced blob", "sha256", d)
}

// WaitReady waits until the metadata cache has loaded.
func (c *Catalog) WaitReady(ctx context.Context) error { return c.cache.WaitReady(ctx) }

// ValidateName checks a name from a request field.
func ValidateName(field, n string) error {
	if err := name.Validate(n); err != nil {
		return fieldErr(field, err)
	}
	return nil
}

// Lookup returns the metadata of name: from etcd (through the cache), or on a
// replica whose etcd does not know it, from the origin.
func (c *Catalog) Lookup(ctx context.Context, n string) (*artifactv1.Artifact, error) {
	if err := ValidateName("name", n); err != nil {
		return nil, err
	}
	if it, ok := c.cache.Get(n); ok {
		return it.Value, nil
	}
	if c.cfg.Origin == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, n)
	}
	c.mu.Lock()
	e, ok := c.remote[n]
	c.mu.Unlock()
	if ok && time.Since(e.when) < c.cfg.RemoteTTL {
		return e.a, nil
	}
	var resp *artifactv1.StatResponse
	err := c.retryOrigin(ctx, func() (err error) {
		resp, err = c.cfg.Origin.Stat(ctx, &artifactv1.StatRequest{Name: n})
		return err
	})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %q (not at the origin either)", ErrNotFound, n)
		}
		return nil, originErr("stat", n, err)
	}
	c.mu.Lock()
	c.remote[n] = remoteEntry{a: resp.GetArtifact(), when: time.Now()}
	c.mu.Unlock()
	return resp.GetArtifact(), nil
}

// Local reports whether the content of a is on this artifactstore's disk.
func (c *Catalog) Local(a *artifactv1.Artifact) bool { return c.cfg.Blobs.Has(a.GetSha256()) }

// List returns the artifacts whose name starts with prefix, sorted by name.
func (c *Catalog) List(prefix string) []*artifactv1.Artifact {
	items := c.cache.List(func(it store.Item[*artifactv1.Artifact]) bool { return strings.HasPrefix(it.Name, prefix) })
	out := make([]*artifactv1.Artifact, len(items))
	for i, it := range items {
		out[i] = it.Value
	}
	return out
}

// Open opens the content of a for reading. A replica that lacks it pulls it from
// the origin first (once, however many ask at the same time) and verifies its
// sha256 before anyone reads a byte. Content not hashed since this process started
// is hashed before it is served (ErrCorrupt, and the blob quarantined, when it does
// not match; a replica then pulls it again). A replica with trusted keys serves
// only artifacts whose signature they verify.
func (c *Catalog) Open(ctx context.Context, a *artifactv1.Artifact) (*os.File, error) {
	if c.cfg.Origin != nil && c.cfg.Keys.Enabled() {
		if err := c.checkTrusted(a); err != nil {
			return nil, err
		}
	}
	f, err := c.OpenDigest(ctx, a.GetName(), a.GetSha256())
	if err == nil {
		c.cfg.Blobs.Remember(f, a.GetSha256(), a.GetSize())
	}
	if err == nil || c.cfg.Origin == nil || !(errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt)) {
		return f, err
	}
	ch := c.fetch.DoChan(a.GetSha256(), func() (any, error) {
		// The pull outlives the request that started it: others wait on it too.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.FetchTimeout)
		defer cancel()
		return nil, c.pull(fctx, a)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
	}
	f, err = c.OpenDigest(ctx, a.GetName(), a.GetSha256())
	if err == nil {
		c.cfg.Blobs.Remember(f, a.GetSha256(), a.GetSize())
	}
	return f, err
}

// Cached returns the bytes of a's content when this artifactstore holds them in
// memory (small blobs, once Open has verified and read them); otherwise Open
// serves it. A replica checks a's signature first, as Open does.
func (c *Catalog) Cached(a *artifactv1.Artifact) ([]byte, bool) {
	if c.cfg.Origin != nil && c.cfg.Keys.Enabled() && c.checkTrusted(a) != nil {
		return nil, false // Open says why
	}
	return c.cfg.Blobs.Cached(a.GetSha256())
}

func (c *Catalog) pull(ctx context.Context, a *artifactv1.Artifact) (err error) {
	if c.cfg.Blobs.Has(a.GetSha256()) {
		return nil
	}
	start := time.Now()
	log := c.log.With("artifact", a.GetName(), "sha256", a.GetSha256())
	defer func() {
		c.cfg.Metrics.fetch(err)
		if err != nil {
			log.Warn("pull from origin failed", "err", err)
			return
		}
		log.Info("pulled from origin", "bytes", a.GetSize(), "duration", time.Since(start))
	}()
	return c.retryOrigin(ctx, func() error { return c.pullOnce(ctx, a) })
}

// retryOrigin runs op, a call to the origin, up to three times while it fails
// with Unavailable. A connection to the origin that broke while idle (a
// middlebox's timeout, a lost link) fails the first call on it; gRPC dials again
// for the next one (after its reconnect backoff, about 1 s, when a dial failed):
// worth two more tries, 0.5 s and 1.5 s later, before a machine's download fails.
func (c *Catalog) retryOrigin(ctx context.Context, op func() error) error {
	for attempt := 0; ; attempt++ {
		err := op()
		if attempt == 2 || status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		c.log.Info("origin unavailable, trying again", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(1+2*attempt) * 500 * time.Millisecond):
		}
	}
}

// pullOnce reads a from the origin into a new blob and commits it (which
// verifies its sha256).
func (c *Catalog) pullOnce(ctx context.Context, a *artifactv1.Artifact) error {
	stream, err := c.cfg.Origin.Read(ctx, &artifactv1.ReadRequest{Name: a.GetName(), Sha256: a.GetSha256()})
	if err != nil {
		return originErr("read", a.GetName(), err)
	}
	w, err := c.cfg.Blobs.Create()
	if err != nil {
		return err
	}
	defer w.Abort()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return originErr("read", a.GetName(), err)
		}
		if _, err := w.Write(msg.GetChunk()); err != nil {
			return err
		}
	}
	if _, err := w.Commit(a.GetSha256(), a.GetSize()); err != nil {
		return fmt.Errorf("%w: content of %q: %w", ErrOrigin, a.GetName(), err)
	}
	c.cfg.Metrics.Verified.WithLabelValues("pull", "ok").Inc()
	return nil
}

// Upload is one upload in progress, from Put's point of view.
type Upload struct {
	// Header as received.
	Header *artifactv1.UploadHeader
	// Next returns the next chunk, io.EOF at the end.
	Next func() ([]byte, error)
}

// Put stores an upload: the blob first, then the metadata. It returns the stored
// metadata and whether the name already had this content.
func (c *Catalog) Put(ctx context.Context, up Upload, maxSize int64) (*artifactv1.Artifact, bool, error) {
	h := up.Header
	if h == nil {
		return nil, false, fieldErr("header", errors.New("the first message must be the header"))
	}
	if err := ValidateName("header.name", h.GetName()); err != nil {
		return nil, false, err
	}
	if h.GetSha256() != "" && !blobstore.ValidDigest(h.GetSha256()) {
		return nil, false, fieldErr("header.sha256", fmt.Errorf("%w: %q", blobstore.ErrBadDigest, h.GetSha256()))
	}
	if h.GetSize() < 0 {
		return nil, false, fieldErr("header.size", errors.New("negative"))
	}
	if maxSize > 0 && h.GetSize() > maxSize {
		return nil, false, fieldErr("header.size", fmt.Errorf("%w: %d bytes, the limit is %d", blobstore.ErrTooLarge, h.GetSize(), maxSize))
	}
	ct := h.GetContentType()
	if ct == "" {
		ct = DefaultContentType
	}
	if len(ct) > 255 || strings.ContainsAny(ct, "\r\n\x00") {
		return nil, false, fieldErr("header.content_type", errors.New("not a MIME type"))
	}
	if r := h.GetReplacesSha256(); r != "" && !blobstore.ValidDigest(r) {
		return nil, false, fieldErr("header.replaces_sha256", fmt.Errorf("%w: %q", blobstore.ErrBadDigest, r))
	}
	if sig := h.GetSignature(); len(sig) != 0 && len(sig) != 64 {
		return nil, false, fmt.Errorf("header.signature: %w: %d bytes, an ed25519 signature has 64", artifactsig.ErrBadSig, len(sig))
	}
	// Refuse before any byte is stored what the header alone shows is refused; the
	// transaction below decides for good.
	if it, ok := c.cache.Get(h.GetName()); ok && h.GetSha256() != "" && it.Value.GetSha256() != h.GetSha256() {
		if err := replaceCheck(h, it.Value); errors.Is(err, ErrStale) {
			return nil, false, fieldErr("header.replaces_sha256", err)
		} else if err != nil {
			return nil, false, err
		}
	}
	if c.cfg.Keys.Enabled() && h.GetSha256() != "" {
		if _, err := c.cfg.Keys.Verify(h.GetName(), h.GetSha256(), h.GetSignature()); err != nil {
			return nil, false, fmt.Errorf("header.signature: %w", err)
		}
	}

	w, err := c.cfg.Blobs.Create()
	if err != nil {
		return nil, false, err
	}
	defer w.Abort()
	for {
		chunk, err := up.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("upload of %q interrupted after %d bytes: %w", h.GetName(), w.Size(), err)
		}
		if h.GetSize() > 0 && w.Size()+int64(len(chunk)) > h.GetSize() {
			return nil, false, fieldErr("header.size", fmt.Errorf("%w: more than the %d bytes announced", blobstore.ErrSizeMismatch, h.GetSize()))
		}
		if _, err := w.Write(chunk); err != nil {
			if errors.Is(err, blobstore.ErrTooLarge) {
				return nil, false, fieldErr("chunk", err)
			}
			return nil, false, err
		}
	}
	wantSize := int64(-1)
	if h.GetSize() > 0 {
		wantSize = h.GetSize()
	}
	// Hold the digest's lock from the blob landing until its metadata is visible, so
	// a concurrent delete of another name with the same content cannot drop it.
	digest, err := w.Commit(h.GetSha256(), wantSize)
	if err != nil {
		switch {
		case errors.Is(err, blobstore.ErrDigestMismatch):
			return nil, false, fieldErr("header.sha256", err)
		case errors.Is(err, blobstore.ErrSizeMismatch):
			return nil, false, fieldErr("header.size", err)
		}
		return nil, false, err
	}
	// A refused upload leaves no blob behind (unless a name refers to it). Deferred
	// before the lock, so it runs after the unlock.
	stored := false
	defer func() {
		if !stored {
			c.dropIfUnreferenced(digest)
		}
	}()
	signingKey := ""
	if c.cfg.Keys.Enabled() {
		if signingKey, err = c.cfg.Keys.Verify(h.GetName(), digest, h.GetSignature()); err != nil {
			return nil, false, fmt.Errorf("header.signature: %w", err)
		}
	}
	l := c.shaLock(digest)
	l.Lock()
	defer l.Unlock()
	// The blob may have been dropped between Commit and the lock (another name with
	// the same content deleted); write it again in that case.
	if !c.cfg.Blobs.Has(digest) {
		return nil, false, fmt.Errorf("content of %q was removed concurrently; retry the upload", h.GetName())
	}
	size := w.Size()
	now := timestamppb.Now()
	unchanged := false
	a, rev, err := store.Mutate(ctx, c.cfg.Store, store.Key("artifacts", h.GetName()), func() *artifactv1.Artifact { return &artifactv1.Artifact{} },
		func(cur *artifactv1.Artifact, exists bool) (*artifactv1.Artifact, error) {
			// Decided on the value the compare-and-swap writes over: two uploaders
			// naming the same old digest cannot both replace it.
			if exists && cur.GetSha256() != digest {
				if err := replaceCheck(h, cur); err != nil {
					return nil, err
				}
			} else if !exists && h.GetReplacesSha256() != "" {
				return nil, fmt.Errorf("%w: %q does not exist any more (replaces_sha256 names %s)", ErrStale, h.GetName(), h.GetReplacesSha256())
			}
			next := &artifactv1.Artifact{
				Name: h.GetName(), Sha256: digest, Size: size, ContentType: ct,
				OriginSite: c.cfg.Site, CreateTime: now, UpdateTime: now,
				Signature: h.GetSignature(), SigningKey: signingKey,
			}
			unchanged = false
			if exists {
				next.CreateTime = cur.GetCreateTime()
				if cur.GetSha256() == digest {
					next.UpdateTime = cur.GetUpdateTime()
					next.OriginSite = cur.GetOriginSite()
					if len(next.GetSignature()) == 0 {
						// Re-uploading the same content unsigned keeps its signature.
						next.Signature, next.SigningKey = cur.GetSignature(), cur.GetSigningKey()
					}
					unchanged = proto.Equal(cur, next)
				}
			}
			return next, nil
		})
	if errors.Is(err, ErrExists) {
		return nil, false, err
	}
	if errors.Is(err, ErrStale) {
		return nil, false, fieldErr("header.replaces_sha256", err)
	}
	if err != nil {
		return nil, false, fmt.Errorf("store metadata of %q: %w", h.GetName(), err)
	}
	stored = true
	if err := c.cache.WaitRevision(ctx, rev); err != nil {
		return nil, false, err
	}
	return a, unchanged, nil
}

// replaceCheck refuses to put h's content over cur's other content unless h names
// cur's sha256.
func replaceCheck(h *artifactv1.UploadHeader, cur *artifactv1.Artifact) error {
	switch r := h.GetReplacesSha256(); {
	case r == "":
		return fmt.Errorf("%w: %q holds other content (sha256 %s): to replace it, name that digest (replaces_sha256, bootctl --replaces)", ErrExists, h.GetName(), cur.GetSha256())
	case r != cur.GetSha256():
		return fmt.Errorf("%w: %q now holds sha256 %s, not the %s replaces_sha256 names; nothing was stored", ErrStale, h.GetName(), cur.GetSha256(), r)
	}
	return nil
}

// Delete removes name. Unless force, it refuses while a profile refers to it; a
// forced delete of an artifact in use must name the sha256 it has now (want), so
// an operator never removes content they have not seen. want, when given, must
// match in any case. It returns the deleted metadata and the profiles that refer
// to it.
func (c *Catalog) Delete(ctx context.Context, n string, force bool, want string) (*artifactv1.Artifact, []string, error) {
	if err := ValidateName("name", n); err != nil {
		return nil, nil, err
	}
	if want != "" && !blobstore.ValidDigest(want) {
		return nil, nil, fieldErr("sha256", fmt.Errorf("%w: %q", blobstore.ErrBadDigest, want))
	}
	refs, err := c.referencedBy(ctx, n)
	if err != nil {
		return nil, nil, err
	}
	if len(refs) > 0 && !force {
		return nil, refs, fmt.Errorf("%w: %q is used by %s (delete with force and its sha256 to remove it anyway)", ErrReferenced, n, strings.Join(refs, ", "))
	}
	a := &artifactv1.Artifact{}
	key := store.Key("artifacts", n)
	rev, err := c.cfg.Store.Get(ctx, key, a)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: %q", ErrNotFound, n)
	}
	if err != nil {
		return nil, nil, err
	}
	if len(refs) > 0 && want == "" {
		return nil, refs, fieldErr("sha256", fmt.Errorf("required to force the delete of %q, used by %s: it holds sha256 %s now", n, strings.Join(refs, ", "), a.GetSha256()))
	}
	if want != "" && want != a.GetSha256() {
		return nil, refs, fmt.Errorf("%w: %q now holds sha256 %s, not %s; nothing was deleted", ErrStale, n, a.GetSha256(), want)
	}
	tctx, cancel := c.cfg.Store.WithTimeout(ctx)
	defer cancel()
	// The digest checked above is the one at rev: the delete happens only if the
	// name has not changed since.
	resp, err := c.cfg.Store.Client().Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("delete metadata of %q: %w", n, err)
	}
	if !resp.Succeeded {
		return nil, nil, fmt.Errorf("%w: %q changed while it was being deleted; nothing was deleted", ErrStale, n)
	}
	// Reads after the delete must not find it.
	if err := c.cache.WaitRevision(ctx, resp.Header.Revision); err != nil {
		return nil, nil, err
	}
	return a, refs, nil
}

// referencedBy lists the profiles whose kernel or initrds name n. It reads etcd,
// not a cache: a profile created a moment ago must count.
func (c *Catalog) referencedBy(ctx context.Context, n string) ([]string, error) {
	tctx, cancel := c.cfg.Store.WithTimeout(ctx)
	defer cancel()
	resp, err := c.cfg.Store.Client().Get(tctx, store.Prefix("profiles"), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		p := &bootapiv1.Profile{}
		if err := proto.Unmarshal(kv.Value, p); err != nil {
			continue
		}
		// A pinned reference (name@sha256:...) uses the name too.
		uses := artifactref.Name(p.GetKernel().GetArtifact()) == n
		for _, r := range p.GetInitrds() {
			uses = uses || artifactref.Name(r.GetArtifact()) == n
		}
		if uses {
			pn := p.GetName()
			if pn == "" {
				pn = strings.TrimPrefix(string(kv.Key), store.Prefix("profiles"))
			}
			out = append(out, pn)
		}
	}
	return out, nil
}

func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// Blobs is the local content store.
func (c *Catalog) Blobs() *blobstore.Store { return c.cfg.Blobs }
