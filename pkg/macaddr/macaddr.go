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
