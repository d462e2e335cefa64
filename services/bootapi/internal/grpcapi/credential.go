package grpcapi

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	authv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/auth/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Credentials serves CredentialService: bearer tokens in etcd, hashed. Every
// bootchain server watches them, so a token works, and a revoked one stops
// working, everywhere without a restart.
type Credentials struct {
	bootapiv1.UnimplementedCredentialServiceServer
	st   *store.Store
	auth *auth.Authenticator
	now  func() time.Time
}

// NewCredentials serves tokens from st; a reads them back (its cache is current
// after the caller's own writes).
func NewCredentials(st *store.Store, a *auth.Authenticator) *Credentials {
	return &Credentials{st: st, auth: a, now: time.Now}
}

// Register adds CredentialService to s.
func (c *Credentials) Register(s *grpc.Server) { bootapiv1.RegisterCredentialServiceServer(s, c) }

// CreateToken mints a token; the response holds its secret, once.
func (c *Credentials) CreateToken(ctx context.Context, req *bootapiv1.CreateTokenRequest) (*bootapiv1.CreateTokenResponse, error) {
	role, err := auth.ParseRole(req.GetRole())
	if err != nil {
		return nil, apierr.InvalidArgument("role", "%q: want one of viewer, operator, admin, service", req.GetRole())
	}
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil || req.GetTtl().AsDuration() < 0 {
			return nil, apierr.InvalidArgument("ttl", "must be a non-negative duration")
		}
	}
	caller, _ := auth.FromContext(ctx)
	// A site-limited admin mints only tokens within its own sites.
	if len(caller.Sites) > 0 {
		if len(req.GetSites()) == 0 {
			return nil, status.Errorf(codes.PermissionDenied, "%s is limited to sites and may not create an unlimited token: name sites", caller)
		}
		for _, s := range req.GetSites() {
			if err := auth.RequireSite(ctx, s); err != nil {
				return nil, err
			}
		}
	}
	spec := auth.TokenSpec{Name: req.GetName(), Role: role, Sites: req.GetSites(), TTL: req.GetTtl().AsDuration(), CreatedBy: caller.String()}
	if err := spec.Validate(); err != nil {
		field := "name"
		switch {
		case !auth.ValidName(spec.Name):
		case spec.TTL < 0:
			field = "ttl"
		default:
			field = "sites"
		}
		return nil, apierr.InvalidArgument(field, "%v", err)
	}
	tok, rec, err := auth.NewToken(spec, c.now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "mint token: %v", err)
	}
	rev, err := c.st.Create(ctx, auth.TokenKey(rec.GetId()), rec)
	if err != nil {
		return nil, apierr.FromError(err)
	}
	c.wait(ctx, rev)
	return &bootapiv1.CreateTokenResponse{Token: tokenInfo(rec), Secret: tok}, nil
}

// ListTokens lists the tokens without their secrets or hashes.
func (c *Credentials) ListTokens(ctx context.Context, _ *bootapiv1.ListTokensRequest) (*bootapiv1.ListTokensResponse, error) {
	caller, _ := auth.FromContext(ctx)
	out := &bootapiv1.ListTokensResponse{}
	for _, t := range c.auth.Tokens() {
		if len(caller.Sites) > 0 && !within(caller, t.GetSites()) {
			continue
		}
		out.Tokens = append(out.Tokens, tokenInfo(t))
	}
	sort.Slice(out.Tokens, func(i, j int) bool {
		a, b := out.Tokens[i], out.Tokens[j]
		if a.GetName() != b.GetName() {
			return a.GetName() < b.GetName()
		}
		return a.GetId() < b.GetId()
	})
	return out, nil
}

// RevokeToken deletes a token; every server stops accepting it as soon as it
// sees the deletion.
func (c *Credentials) RevokeToken(ctx context.Context, req *bootapiv1.RevokeTokenRequest) (*bootapiv1.RevokeTokenResponse, error) {
	if !auth.ValidTokenID(req.GetId()) {
		return nil, apierr.InvalidArgument("id", "want the 16 hex characters between bct_ and the second '_'")
	}
	caller, _ := auth.FromContext(ctx)
	if len(caller.Sites) > 0 {
		var t authv1.Token
		if _, err := c.st.Get(ctx, auth.TokenKey(req.GetId()), &t); err == nil && !within(caller, t.GetSites()) {
			return nil, status.Errorf(codes.PermissionDenied, "%s may not revoke a token beyond its sites", caller)
		}
	}
	err := auth.RevokeToken(ctx, c.st, req.GetId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound("token", req.GetId())
	}
	if err != nil {
		return nil, apierr.FromError(err)
	}
	return &bootapiv1.RevokeTokenResponse{}, nil
}

// within reports whether every one of sites is the caller's, and sites are
// limited at all.
func within(caller auth.Identity, sites []string) bool {
	if len(sites) == 0 {
		return len(caller.Sites) == 0
	}
	for _, s := range sites {
		if !caller.MaySite(s) {
			return false
		}
	}
	return true
}

func (c *Credentials) wait(ctx context.Context, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = c.auth.WaitRevision(ctx, rev)
}

func tokenInfo(t *authv1.Token) *bootapiv1.TokenInfo {
	return &bootapiv1.TokenInfo{
		Id: t.GetId(), Name: t.GetName(), Role: t.GetRole(), Sites: t.GetSites(),
		CreateTime: t.GetCreateTime(), ExpireTime: t.GetExpireTime(), CreatedBy: t.GetCreatedBy(),
	}
}
