package auth

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"strings"
	"sync"
	"time"

	authv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/auth/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authenticator finds the identity of a gRPC call: a bearer token checked against
// the tokens in etcd (mirrored in memory, so no call waits on etcd, and a revoked
// token stops working as soon as the deletion is watched), or else the identity URI
// of the verified client certificate.
type Authenticator struct {
	st     *store.Store
	tokens *store.Cache[*authv1.Token]
	now    func() time.Time
	// misses bounds the etcd reads of ids the cache does not hold yet.
	misses *rate.Limiter
	// found remembers, for foundFor, the tokens such a read found: a client
	// that starts a burst of calls with a token minted a moment ago needs one
	// read, not one per call within the miss bound.
	mu    sync.Mutex
	found map[string]foundToken
}

type foundToken struct {
	tok   *authv1.Token
	until time.Time
}

// foundFor is how long a token read from etcd is trusted without the cache: a
// revocation watched in that window takes effect when it ends. It is longer than
// the cache's usual lag (milliseconds) and short next to any revocation's urgency.
const foundFor = 2 * time.Second

// maxFound bounds the remembered tokens (only real ones are remembered).
const maxFound = 1024

// NewAuthenticator reads the tokens from st. Run it (grpcserver does) before it
// authenticates anything.
func NewAuthenticator(st *store.Store, log *slog.Logger) *Authenticator {
	return &Authenticator{
		st:     st,
		tokens: store.NewCache(st, TokenPrefix, func() *authv1.Token { return &authv1.Token{} }, log),
		now:    time.Now,
		misses: rate.NewLimiter(rate.Limit(missReadsPerSecond), missReadsPerSecond),
		found:  map[string]foundToken{},
	}
}

// missReadsPerSecond bounds how often an id the cache lacks is looked up in etcd:
// a token created a moment ago on another server works at once, and a flood of
// made-up ids costs etcd at most this many reads a second.
const missReadsPerSecond = 20

// Run keeps the token cache current until ctx ends.
func (a *Authenticator) Run(ctx context.Context) error { return a.tokens.Run(ctx) }

// WaitReady blocks until the tokens have loaded.
func (a *Authenticator) WaitReady(ctx context.Context) error { return a.tokens.WaitReady(ctx) }

// WaitRevision blocks until the authenticator has seen etcd revision rev (a token
// created or revoked at rev).
func (a *Authenticator) WaitRevision(ctx context.Context, rev int64) error {
	return a.tokens.WaitRevision(ctx, rev)
}

// Authenticate returns the caller's identity, or an Unauthenticated status that
// says which credential is missing or wrong (never its secret).
func (a *Authenticator) Authenticate(ctx context.Context) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return Identity{}, status.Error(codes.Unauthenticated, "more than one authorization header")
		}
		return a.token(ctx, vals[0])
	}
	p, ok := peer.FromContext(ctx)
	if ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			leaf := ti.State.VerifiedChains[0][0]
			for _, u := range leaf.URIs {
				if u.Scheme != uriScheme {
					continue
				}
				id, err := ParseIdentityURI(u.String())
				if err != nil {
					return Identity{}, status.Errorf(codes.Unauthenticated, "client certificate %q: %v", leaf.Subject.CommonName, err)
				}
				return id, nil
			}
			return Identity{}, status.Errorf(codes.Unauthenticated,
				"client certificate %q carries no identity URI (bootchain://<role>/<name>): a CA signature alone is not an identity; present a certificate with one or a bearer token",
				leaf.Subject.CommonName)
		}
	}
	return Identity{}, status.Error(codes.Unauthenticated,
		"no credential: send 'authorization: Bearer bct_...' (bootctl --token, BOOTCHAIN_TOKEN) or a client certificate with a bootchain:// identity URI")
}

func (a *Authenticator) token(ctx context.Context, header string) (Identity, error) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return Identity{}, status.Error(codes.Unauthenticated, "authorization header: want 'Bearer bct_...'")
	}
	id, secret, err := ParseToken(strings.TrimSpace(tok))
	if err != nil {
		return Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	t := a.lookup(ctx, id)
	// The hash is compared even for an unknown id, so that the answer's timing
	// does not tell which ids exist.
	want := make([]byte, 32)
	if t != nil {
		want = t.GetSecretSha256()
	}
	match := subtle.ConstantTimeCompare(HashSecret(secret), want) == 1
	if t == nil || !match {
		return Identity{}, status.Errorf(codes.Unauthenticated, "token %s: unknown, revoked or wrong secret", id)
	}
	if exp := t.GetExpireTime(); exp != nil && !a.now().Before(exp.AsTime()) {
		return Identity{}, status.Errorf(codes.Unauthenticated, "token %s (%s): expired at %s", id, t.GetName(), exp.AsTime().UTC().Format(time.RFC3339))
	}
	role, err := ParseRole(t.GetRole())
	if err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "token %s (%s): %v", id, t.GetName(), err)
	}
	return Identity{Name: t.GetName(), Kind: KindToken, Role: role, Sites: t.GetSites(), TokenID: id}, nil
}

// lookup finds the token id: in the cache, or, for an id the cache does not hold
// (created a moment ago), in etcd within the rate bound.
func (a *Authenticator) lookup(ctx context.Context, id string) *authv1.Token {
	if it, ok := a.tokens.Get(id); ok {
		return it.Value
	}
	now := a.now()
	a.mu.Lock()
	f, ok := a.found[id]
	a.mu.Unlock()
	if ok && now.Before(f.until) {
		return f.tok
	}
	if !a.misses.Allow() {
		return nil
	}
	var t authv1.Token
	if _, err := a.st.Get(ctx, TokenKey(id), &t); err != nil {
		return nil
	}
	a.mu.Lock()
	for k, f := range a.found {
		if !now.Before(f.until) {
			delete(a.found, k)
		}
	}
	if len(a.found) < maxFound {
		a.found[id] = foundToken{tok: &t, until: now.Add(foundFor)}
	}
	a.mu.Unlock()
	return &t
}

// Tokens lists the stored tokens (for CredentialService).
func (a *Authenticator) Tokens() []*authv1.Token {
	items := a.tokens.List(nil)
	out := make([]*authv1.Token, 0, len(items))
	for _, it := range items {
		out = append(out, it.Value)
	}
	return out
}

// RequireSite returns nil when the caller may act on site, else PermissionDenied
// naming the site. A context without an identity is refused: every server call has
// one, so its absence is a bug that must not widen access.
func RequireSite(ctx context.Context, site string) error {
	id, ok := FromContext(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "no authenticated identity")
	}
	if !id.MaySite(site) {
		return status.Errorf(codes.PermissionDenied, "%s may not act on site %q (limited to %s)", id, site, strings.Join(id.Sites, ", "))
	}
	return nil
}

// MaySite reports whether the caller may see site; lists use it to filter.
func MaySite(ctx context.Context, site string) bool {
	id, ok := FromContext(ctx)
	return ok && id.MaySite(site)
}

// authorize checks that id may call fullMethod.
func authorize(id Identity, fullMethod string) error {
	p, err := MethodPermission(fullMethod)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "%s: %v", fullMethod, err)
	}
	if !id.Role.Allows(p) {
		return status.Errorf(codes.PermissionDenied, "%s needs permission %s, which role %s does not grant (%s)", fullMethod, p, id.Role, id)
	}
	return nil
}

// open methods need no credential; authenticated methods need one but no
// permission.
func open(fullMethod string) bool { return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") }

func anyIdentity(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.reflection.v1.ServerReflection/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.v1alpha.ServerReflection/")
}

// check authenticates and authorizes one call and returns its context with the
// identity.
func (a *Authenticator) check(ctx context.Context, fullMethod string) (context.Context, error) {
	if open(fullMethod) {
		return ctx, nil
	}
	id, err := a.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if !anyIdentity(fullMethod) {
		if err := authorize(id, fullMethod); err != nil {
			return nil, err
		}
	}
	return NewContext(ctx, id), nil
}
