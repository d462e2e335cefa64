// Package name validates artifact names. A name is a relative path of segments
// made of [A-Za-z0-9._-], joined by single '/': "undionly.kpxe", "debian/12/linux".
// Names are used as etcd keys and as URL paths, never as file paths (blobs are
// stored by sha256), but they are still held to a strict form so that no name can
// mean two things to two components.
package name

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLen is the longest name accepted, in bytes.
const MaxLen = 255

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid artifact name")

// Validate returns nil for a well-formed name, or an error wrapping ErrInvalid that
// says what is wrong.
func Validate(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("%w: empty", ErrInvalid)
	case len(n) > MaxLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(n), MaxLen)
	case n[0] == '/':
		return fmt.Errorf("%w: %q is absolute", ErrInvalid, n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !allowed(c) {
			return fmt.Errorf("%w: %q: character %q at %d not allowed (want letters, digits, '.', '_', '-', '/')", ErrInvalid, n, c, i)
		}
	}
	for _, seg := range strings.Split(n, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: %q has an empty path segment", ErrInvalid, n)
		case ".", "..":
			return fmt.Errorf("%w: %q has a %q segment", ErrInvalid, n, seg)
		}
	}
	return nil
}

func allowed(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '/'
}
