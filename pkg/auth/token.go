package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	authv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/auth/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A bearer token is "bct_<id>_<secret>": id is 16 lower-case hex characters (public:
// the etcd key, shown by ListTokens and in errors), secret is 32 random bytes in
// unpadded base64url. Only the secret's SHA-256 is stored.
const (
	tokenPrefix  = "bct_"
	tokenIDLen   = 16
	secretBytes  = 32
	secretLen    = 43 // base64.RawURLEncoding.EncodedLen(secretBytes)
	tokenLen     = len(tokenPrefix) + tokenIDLen + 1 + secretLen
	tokenSubpath = "credentials/tokens"
)

// TokenPrefix is the etcd prefix the tokens are stored under.
var TokenPrefix = store.Prefix(tokenSubpath)

// TokenKey is the etcd key of the token with this id.
func TokenKey(id string) string { return store.Key(tokenSubpath, id) }

// ErrMalformedToken is returned for a string that is not a bootchain token. It
// never quotes the string: it may be a secret pasted in the wrong place.
var ErrMalformedToken = errors.New("malformed bearer token: want bct_<16 hex id>_<43 base64url characters>")

// ParseToken splits a token string into its public id and its secret.
func ParseToken(s string) (id string, secret []byte, err error) {
	if len(s) != tokenLen || !strings.HasPrefix(s, tokenPrefix) || s[len(tokenPrefix)+tokenIDLen] != '_' {
		return "", nil, ErrMalformedToken
	}
	id = s[len(tokenPrefix) : len(tokenPrefix)+tokenIDLen]
	if !ValidTokenID(id) {
		return "", nil, ErrMalformedToken
	}
	secret, err = base64.RawURLEncoding.Strict().DecodeString(s[len(tokenPrefix)+tokenIDLen+1:])
	if err != nil || len(secret) != secretBytes {
		return "", nil, ErrMalformedToken
	}
	return id, secret, nil
}

// FormatToken is the token string for id and secret.
func FormatToken(id string, secret []byte) string {
	return tokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret)
}

// ValidTokenID reports whether s is a token id: 16 lower-case hex characters.
func ValidTokenID(s string) bool {
	if len(s) != tokenIDLen {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// HashSecret is what etcd stores of a token's secret.
func HashSecret(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return h[:]
}

// TokenSpec describes a token to mint.
type TokenSpec struct {
	// Name of the holder.
	Name string
	// Role it grants.
	Role Role
	// Sites it is limited to; empty: all.
	Sites []string
	// TTL; zero: it never expires.
	TTL time.Duration
	// CreatedBy names who minted it (Identity.String(), or "bootchain token create").
	CreatedBy string
}

// Validate reports a spec that cannot be minted, naming the field.
func (s TokenSpec) Validate() error {
	if !ValidName(s.Name) {
		return fmt.Errorf("name %q: want 1-63 letters, digits, '.', '_', '-'", s.Name)
	}
	if _, err := ParseRole(string(s.Role)); err != nil || Role(strings.ToLower(string(s.Role))) != s.Role {
		return fmt.Errorf("role %q: want one of viewer, operator, admin, service", s.Role)
	}
	for _, site := range s.Sites {
		if !ValidName(site) {
			return fmt.Errorf("site %q: want 1-63 letters, digits, '.', '_', '-'", site)
		}
	}
	if s.TTL < 0 {
		return fmt.Errorf("ttl %s: must not be negative", s.TTL)
	}
	return nil
}

// NewToken draws a fresh id and secret and returns the token string and the record
// to store (which holds only the secret's hash).
func NewToken(spec TokenSpec, now time.Time) (string, *authv1.Token, error) {
	if err := spec.Validate(); err != nil {
		return "", nil, err
	}
	var idb [tokenIDLen / 2]byte
	secret := make([]byte, secretBytes)
	if _, err := rand.Read(idb[:]); err != nil {
		return "", nil, err
	}
	if _, err := rand.Read(secret); err != nil {
		return "", nil, err
	}
	id := hex.EncodeToString(idb[:])
	var sites []string
	for _, s := range spec.Sites {
		if !slices.Contains(sites, s) {
			sites = append(sites, s)
		}
	}
	t := &authv1.Token{
		Id: id, Name: spec.Name, Role: string(spec.Role), Sites: sites, SecretSha256: HashSecret(secret),
		CreateTime: timestamppb.New(now), CreatedBy: spec.CreatedBy,
	}
	if spec.TTL > 0 {
		t.ExpireTime = timestamppb.New(now.Add(spec.TTL))
	}
	return FormatToken(id, secret), t, nil
}

// MintToken creates a token in etcd and returns its string (to hand over once) and
// its record. It works without any bootchain server running: `bootchain token
// create` and the tests mint their first admin token with it.
func MintToken(ctx context.Context, st *store.Store, spec TokenSpec) (string, *authv1.Token, error) {
	tok, rec, err := NewToken(spec, time.Now())
	if err != nil {
		return "", nil, err
	}
	if _, err := st.Create(ctx, TokenKey(rec.GetId()), rec); err != nil {
		return "", nil, fmt.Errorf("store token %s: %w", rec.GetId(), err)
	}
	return tok, rec, nil
}

// RevokeToken deletes the token with this id; store.ErrNotFound when there is none.
func RevokeToken(ctx context.Context, st *store.Store, id string) error {
	if !ValidTokenID(id) {
		return fmt.Errorf("token id %q: want 16 lower-case hex characters", id)
	}
	return st.Delete(ctx, TokenKey(id), 0)
}

// ReadTokenFile returns the token in the first line of the file at path, checked
// for its form (the error never quotes the file's content).
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	tok := strings.TrimSpace(line)
	if _, _, err := ParseToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return tok, nil
}
