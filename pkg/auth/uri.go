package auth

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// A client certificate names its holder in a URI subject alternative name:
//
//	bootchain://<role>/<name>[?sites=<site>,<site>]
//
// A certificate the CA signed but that carries no such URI is no identity: the CA
// alone does not make a caller an admin.
const uriScheme = "bootchain"

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// ValidName reports whether s is a valid identity, token or site name in a
// credential: 1-63 characters of letters, digits, '.', '_' and '-'.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// IdentityURI is the URI SAN that names id in a client certificate.
func IdentityURI(id Identity) string {
	u := url.URL{Scheme: uriScheme, Host: string(id.Role), Path: "/" + id.Name}
	if len(id.Sites) > 0 {
		u.RawQuery = "sites=" + strings.Join(id.Sites, ",")
	}
	return u.String()
}

// ErrNoIdentityURI is returned for a URI that is not a bootchain identity.
var ErrNoIdentityURI = errors.New("not a bootchain identity URI (bootchain://<role>/<name>)")

// ParseIdentityURI reads an identity from a certificate's URI SAN; Kind is
// KindCert.
func ParseIdentityURI(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != uriScheme || u.Opaque != "" || u.User != nil || u.Fragment != "" {
		return Identity{}, ErrNoIdentityURI
	}
	role, err := ParseRole(u.Host)
	if err != nil || u.Host != string(role) {
		return Identity{}, fmt.Errorf("identity URI %q: role %q: want one of viewer, operator, admin, service", s, u.Host)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if !ValidName(name) {
		return Identity{}, fmt.Errorf("identity URI %q: name %q: want 1-63 letters, digits, '.', '_', '-'", s, name)
	}
	id := Identity{Name: name, Kind: KindCert, Role: role}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Identity{}, fmt.Errorf("identity URI %q: %w", s, err)
	}
	for k := range q {
		if k != "sites" {
			return Identity{}, fmt.Errorf("identity URI %q: unknown parameter %q", s, k)
		}
	}
	if v := q.Get("sites"); v != "" {
		for _, site := range strings.Split(v, ",") {
			if !ValidName(site) {
				return Identity{}, fmt.Errorf("identity URI %q: site %q: want 1-63 letters, digits, '.', '_', '-'", s, site)
			}
			if !slices.Contains(id.Sites, site) {
				id.Sites = append(id.Sites, site)
			}
		}
	}
	return id, nil
}
