// Package store keeps bootchain's shared state in etcd.
//
// Every value is a protobuf message stored under Root ("/bootchain/v1/"). Writes
// compare mod_revision so that replicas never lose an update; reads on hot paths go
// through a Cache, which is fed by list+watch and never waits on etcd.
//
//	st, err := store.Open(ctx, store.Config{Endpoints: []string{"127.0.0.1:2379"}})
//	m := &bootapiv1.Machine{}
//	rev, err := st.Get(ctx, store.Key("machines", mac), m)
//	_, err = st.Update(ctx, store.Key("machines", mac), m, rev)
package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/protobuf/proto"
)

// Root is the prefix of every key bootchain writes.
const Root = "/bootchain/v1/"

// Errors returned by Store methods; compare with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	ErrConflict = errors.New("store: changed concurrently")
)

// Config says how to reach etcd.
type Config struct {
	// Endpoints of the etcd cluster (host:port or URLs).
	Endpoints []string
	// DialTimeout bounds connecting; default 5s.
	DialTimeout time.Duration
	// RequestTimeout bounds every single call; default 5s.
	RequestTimeout time.Duration
	// TLS for etcd client connections; nil for plaintext.
	TLS *tls.Config
	// Username and Password for etcd auth, when enabled. The password is never
	// put in an error or a log line.
	Username, Password string
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("store: no etcd endpoints")
	}
	for _, e := range c.Endpoints {
		if strings.TrimSpace(e) == "" {
			return errors.New("store: empty etcd endpoint")
		}
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("store: an etcd password needs a username")
	}
	if c.Username != "" && c.TLS == nil {
		for _, e := range c.Endpoints {
			if !loopbackEndpoint(e) {
				return fmt.Errorf("store: etcd user %q: the password would cross the network in plaintext to %s; connect with TLS (--etcd-tls-ca)", c.Username, e)
			}
		}
	}
	return nil
}

// loopbackEndpoint reports whether an etcd endpoint (host:port or a URL) is on
// this host's loopback.
func loopbackEndpoint(e string) bool {
	if u, err := url.Parse(e); err == nil && u.Host != "" {
		if u.Scheme == "https" || u.Scheme == "unixs" {
			return true // TLS whatever the host: no plaintext
		}
		e = u.Host
	}
	host, _, err := net.SplitHostPort(e)
	if err != nil {
		host = e
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Store is an etcd client that reads and writes protobuf values.
type Store struct {
	cli     *clientv3.Client
	timeout time.Duration
}

// reconnect is how the client dials etcd again after losing it: gRPC's
// backoff, its longest wait cut from 120 s to 5 s. A site cut off from the core
// for two minutes otherwise waited up to 48 s after its link came back before
// it tried again (and replayed its journal); a try every 5 s costs a few
// packets per service.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// Open connects to etcd and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Context:     ctx,
		Logger:      zap.NewNop(),
		// Keep the connection alive across idle periods so the first packet after a
		// quiet hour does not pay for a reconnect.
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(reconnect)},
	})
	if err != nil {
		return nil, authError(cfg, err)
	}
	reportWrites(cli)
	s := &Store{cli: cli, timeout: cfg.RequestTimeout}
	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, Root+"ping", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, authError(cfg, err)
	}
	return s, nil
}

// authError says what an etcd that refuses bootchain's credentials wants; other
// errors say etcd does not answer.
func authError(cfg Config, err error) error {
	user := fmt.Sprintf("%q", cfg.Username)
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("store: etcd at %v: authentication failed for user %s: check the username and password (file): %w", cfg.Endpoints, user, err)
	case errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrInvalidAuthToken),
		cfg.Username == "" && errors.Is(err, rpctypes.ErrPermissionDenied):
		// Without a user, etcd takes the client certificate's CN as one, if any.
		return fmt.Errorf("store: etcd at %v has authentication enabled: give --etcd-username and --etcd-password-file (or BOOTCHAIN_ETCD_PASSWORD): %w", cfg.Endpoints, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Errorf("store: etcd at %v: user %s may not read %s: grant it a role with readwrite on the prefix %s: %w", cfg.Endpoints, user, Root, strings.TrimSuffix(Root, "v1/"), err)
	}
	return fmt.Errorf("store: etcd at %v does not answer: %w", cfg.Endpoints, err)
}

// FromClient wraps an etcd client that is already connected (an in-process one, as
// etcdembed hands out); requestTimeout bounds each call (default 5s). Close closes cli.
// From then on cli's writes report their revisions (WithRevisions).
func FromClient(cli *clientv3.Client, requestTimeout time.Duration) *Store {
	if requestTimeout == 0 {
		requestTimeout = 5 * time.Second
	}
	reportWrites(cli)
	return &Store{cli: cli, timeout: requestTimeout}
}

// Client is the underlying etcd client, for transactions Store does not wrap.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close releases the connection.
func (s *Store) Close() error { return s.cli.Close() }

// Key joins parts under Root: Key("machines", mac) = "/bootchain/v1/machines/<mac>".
func Key(parts ...string) string { return Root + strings.Join(parts, "/") }

// Prefix is Key with a trailing slash, for listing a collection.
func Prefix(parts ...string) string { return Key(parts...) + "/" }

// WithTimeout bounds ctx by the per-call timeout.
func (s *Store) WithTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// Get reads key into m and returns its mod_revision.
func (s *Store) Get(ctx context.Context, key string, m proto.Message) (int64, error) {
	ctx, cancel := s.WithTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("store: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err := proto.Unmarshal(resp.Kvs[0].Value, m); err != nil {
		return 0, fmt.Errorf("store: decode %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// Unchanged is the compare of a compare-and-swap write: key is still at rev, the
// mod_revision it was read at, or, with rev 0, still absent.
func Unchanged(key string, rev int64) clientv3.Cmp {
	if rev == 0 {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev)
}

// Create writes m at key only if key does not exist; it returns the new revision.
func (s *Store) Create(ctx context.Context, key string, m proto.Message, opts ...clientv3.OpOption) (int64, error) {
	return s.txnPut(ctx, key, m, Unchanged(key, 0), ErrExists, opts...)
}

// Update writes m at key only if key is still at modRev.
func (s *Store) Update(ctx context.Context, key string, m proto.Message, modRev int64, opts ...clientv3.OpOption) (int64, error) {
	return s.txnPut(ctx, key, m, Unchanged(key, modRev), ErrConflict, opts...)
}

// Put writes m at key unconditionally.
func (s *Store) Put(ctx context.Context, key string, m proto.Message, opts ...clientv3.OpOption) (int64, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("store: encode %s: %w", key, err)
	}
	ctx, cancel := s.WithTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Put(ctx, key, string(b), opts...)
	if err != nil {
		return 0, fmt.Errorf("store: put %s: %w", key, err)
	}
	return resp.Header.Revision, nil
}

func (s *Store) txnPut(ctx context.Context, key string, m proto.Message, cmp clientv3.Cmp, failErr error, opts ...clientv3.OpOption) (int64, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("store: encode %s: %w", key, err)
	}
	ctx, cancel := s.WithTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(b), opts...)).Commit()
	if err != nil {
		return 0, fmt.Errorf("store: write %s: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%w: %s", failErr, key)
	}
	return resp.Header.Revision, nil
}

// Delete removes key. With modRev > 0 it deletes only if key is still at modRev.
func (s *Store) Delete(ctx context.Context, key string, modRev int64) error {
	ctx, cancel := s.WithTimeout(ctx)
	defer cancel()
	cmp := clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	if modRev > 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", modRev)
	}
	resp, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", key, err)
	}
	if !resp.Succeeded {
		if modRev > 0 {
			return fmt.Errorf("%w: %s", ErrConflict, key)
		}
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return nil
}

// Mutate reads key into a fresh T, calls fn, and writes what fn returns with a
// compare-and-swap, retrying on conflict. fn sees exists=false for a missing key
// (with a zero T it may fill). fn returning (nil, nil) deletes the key. An error from
// fn aborts without writing and is returned as is.
func Mutate[T proto.Message](ctx context.Context, s *Store, key string, newT func() T, fn func(cur T, exists bool) (T, error)) (T, int64, error) {
	var zero T
	for attempt := 0; attempt < 32; attempt++ {
		cur := newT()
		rev, err := s.Get(ctx, key, cur)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return zero, 0, err
		}
		next, err := fn(cur, exists)
		if err != nil {
			return zero, 0, err
		}
		cmp := Unchanged(key, rev) // rev is 0 when the key does not exist
		var op clientv3.Op
		if isNil(next) {
			if !exists {
				return zero, 0, nil
			}
			op = clientv3.OpDelete(key)
		} else {
			b, err := proto.Marshal(next)
			if err != nil {
				return zero, 0, fmt.Errorf("store: encode %s: %w", key, err)
			}
			op = clientv3.OpPut(key, string(b))
		}
		tctx, cancel := s.WithTimeout(ctx)
		resp, err := s.cli.Txn(tctx).If(cmp).Then(op).Commit()
		cancel()
		if err != nil {
			return zero, 0, fmt.Errorf("store: write %s: %w", key, err)
		}
		if resp.Succeeded {
			return next, resp.Header.Revision, nil
		}
		if err := RetryWait(ctx, attempt); err != nil {
			return zero, 0, err
		}
	}
	return zero, 0, fmt.Errorf("%w: %s: too many concurrent writers", ErrConflict, key)
}

func isNil(m proto.Message) bool {
	return m == nil || !m.ProtoReflect().IsValid()
}

// RetryWait waits before compare-and-swap round attempt+1 after round attempt lost
// the race: a random moment up to 100µs·2^attempt (at most 6.4 ms), so writers that
// collided do not collide again in lock-step. With the in-process client a round
// takes microseconds, and 8 writers retrying at once could lose 32 rounds in a row.
// It returns ctx's error if ctx ends first.
func RetryWait(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(100*time.Microsecond) << min(attempt, 6))))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
