// Package auth is who may call bootchain's APIs: the caller's identity (from a
// client certificate or a bearer token), its role and the sites it is limited to,
// and the permission each RPC declares.
//
// Roles, from least to most:
//
//	viewer    reads everything but credentials and the audit log
//	operator  viewer + machines and jobs (register, update, reinstall, cancel)
//	admin     everything: profiles, sites, artifacts, leases, credentials, audit
//	service   what one bootchain service asks of another: reading artifacts
//	          (tftpd, artifactstore replicas)
//
// Any identity may be limited to sites; an identity with no sites is not limited.
package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Role is a named set of permissions.
type Role string

// The roles.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
	RoleService  Role = "service"
)

// Roles are the valid roles, in the order the docs list them.
var Roles = []Role{RoleViewer, RoleOperator, RoleAdmin, RoleService}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("role %q: want one of viewer, operator, admin, service", s)
	}
	return r, nil
}

// Kind is how an identity proved itself.
type Kind string

// The kinds of credential.
const (
	KindCert  Kind = "cert"
	KindToken Kind = "token"
)

// Identity is an authenticated caller.
type Identity struct {
	// Name is the certificate's or the token's name ("admin", "ci-bot",
	// "tftpd-site-a").
	Name string
	// Kind of credential it presented.
	Kind Kind
	// Role it holds.
	Role Role
	// Sites it is limited to; empty: all sites.
	Sites []string
	// TokenID is the token's public id, for a token.
	TokenID string
}

// String names the identity for logs and the audit log: "token:ci-bot(operator)".
// It never holds a secret.
func (id Identity) String() string {
	s := string(id.Kind) + ":" + id.Name + "(" + string(id.Role)
	if len(id.Sites) > 0 {
		s += " sites=" + strings.Join(id.Sites, ",")
	}
	return s + ")"
}

// MaySite reports whether the identity may act on site.
func (id Identity) MaySite(site string) bool {
	return len(id.Sites) == 0 || slices.Contains(id.Sites, site)
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity the server authenticated for this call.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
