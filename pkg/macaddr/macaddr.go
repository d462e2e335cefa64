// Package macaddr parses and formats the MAC addresses bootchain keys machines by.
package macaddr

import (
	"fmt"
	"net"
	"strings"
)

// Normalize parses a 48-bit MAC in any common notation (aa:bb:cc:dd:ee:ff,
// AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff, aabbccddeeff) and returns the canonical
// lower-case colon form.
func Normalize(s string) (string, error) {
	// Fast path for the forms on the hot paths, six hex pairs separated by ':'
	// (API clients, DHCP) or '-' (iPXE's ${net0/mac:hexhyp}): at most one
	// allocation, none when s is already canonical.
	if c, ok := separated(s); ok {
		return c, nil
	}
	return parse(s)
}

// parse is Normalize without the fast path.
func parse(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) == 12 && !strings.ContainsAny(s, ":-.") {
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(s[i : i+2])
		}
		s = b.String()
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("not a 48-bit MAC address: %q", s)
	}
	return hw.String(), nil
}

// MustNormalize is Normalize for constants in tests; it panics on a bad MAC.
func MustNormalize(s string) string {
	m, err := Normalize(s)
	if err != nil {
		panic(err)
	}
	return m
}

// separated parses six hex pairs separated by ':' or '-' (the same separator
// throughout) into the canonical form.
func separated(s string) (string, bool) {
	if len(s) != 17 || (s[2] != ':' && s[2] != '-') {
		return "", false
	}
	sep, canon := s[2], s[2] == ':'
	var b [17]byte
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != sep {
				return "", false
			}
			b[i] = ':'
			continue
		}
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			c += 'a' - 'A'
			canon = false
		default:
			return "", false
		}
		b[i] = c
	}
	if canon {
		return s, true
	}
	return string(b[:]), true
}

// Bits returns the 48-bit value of mac in the canonical form Normalize returns
// (a map key that compares without reading a string); false for anything else.
func Bits(mac string) (uint64, bool) {
	if len(mac) != 17 {
		return 0, false
	}
	var v uint64
	for i := 0; i < 17; i++ {
		c := mac[i]
		if i%3 == 2 {
			if c != ':' {
				return 0, false
			}
			continue
		}
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uint64(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}
