// Package artifactref parses the artifact references profiles hold: a bare name
// ("debian/12/linux") or a name pinned to the content it must have
// ("debian/12/linux@sha256:<64 lower-case hex digits>"). A pin makes a replaced
// artifact refuse to boot instead of booting whatever the name holds now.
//
// The name itself is checked by the caller (bootapi and artifactstore each have
// their rules); Parse only splits and checks the digest.
package artifactref

import (
	"errors"
	"fmt"
	"strings"
)

// DigestPrefix separates a name from its pinned digest.
const DigestPrefix = "@sha256:"

// Ref is a parsed reference.
type Ref struct {
	// Name of the artifact.
	Name string
	// SHA256 pinned, 64 lower-case hex digits; empty when not pinned.
	SHA256 string
}

// String formats r back into its reference form.
func (r Ref) String() string {
	if r.SHA256 == "" {
		return r.Name
	}
	return r.Name + DigestPrefix + r.SHA256
}

// Pinned reports whether r names a digest.
func (r Ref) Pinned() bool { return r.SHA256 != "" }

// Parse splits s into name and pinned digest. Anything after the first '@' must be
// "sha256:" and 64 lower-case hex digits; the name must be non-empty.
func Parse(s string) (Ref, error) {
	name, rest, pinned := strings.Cut(s, "@")
	if name == "" {
		return Ref{}, errors.New("empty artifact name")
	}
	if !pinned {
		return Ref{Name: name}, nil
	}
	d, ok := strings.CutPrefix(rest, "sha256:")
	if !ok {
		return Ref{}, fmt.Errorf("%q: a pin must be @sha256:<64 hex digits>", s)
	}
	if !ValidDigest(d) {
		return Ref{}, fmt.Errorf("%q: a pin must be @sha256: and 64 lower-case hex digits", s)
	}
	return Ref{Name: name, SHA256: d}, nil
}

// Name returns the name part of a reference, whether or not it parses (for
// matching references against a name).
func Name(s string) string {
	n, _, _ := strings.Cut(s, "@")
	return n
}

// ValidDigest reports whether d is 64 lower-case hex digits.
func ValidDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
