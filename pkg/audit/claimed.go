package audit

import (
	"context"
	"strings"

	"github.com/bootchain/bootchain/pkg/auth"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// claimed names the credential a caller presented, for a refused call whose
// identity authentication never established (an unknown, expired or revoked
// token; a certificate that is not an identity; or a permission check made
// before the audit log's inner interceptor ran): "claimed:token/<id>" with the
// token's public id, "claimed:cert/<URI SAN or CN>". Never a secret. "" when
// the caller presented nothing.
func claimed(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, "authorization"); len(v) > 0 {
		if id, ok := tokenID(v[0]); ok {
			return "claimed:token/" + id
		}
		return "claimed:token/malformed"
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			c := ti.State.PeerCertificates[0]
			for _, u := range c.URIs {
				if u.Scheme == "bootchain" {
					return "claimed:cert/" + clip(u.String(), maxField)
				}
			}
			return "claimed:cert/CN=" + clip(c.Subject.CommonName, maxField)
		}
	}
	return ""
}

// tokenID returns the public id of a bearer token "Bearer bct_<16 hex>_<secret>"
// and nothing of the secret.
func tokenID(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), "bct_")
	if !ok || len(rest) < 17 || rest[16] != '_' {
		return "", false
	}
	if id := rest[:16]; auth.ValidTokenID(id) {
		return id, true
	}
	return "", false
}
