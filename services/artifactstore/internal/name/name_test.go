package name

import (
	"errors"
	"path"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := map[string]struct {
		in string
		ok bool
	}{
		"simple":          {"undionly.kpxe", true},
		"folders":         {"debian/12/linux", true},
		"dashes":          {"ipxe-arm64_v1.efi", true},
		"empty":           {"", false},
		"absolute":        {"/etc/passwd", false},
		"dotdot":          {"../etc/passwd", false},
		"dotdot inside":   {"a/../../b", false},
		"dot":             {"a/./b", false},
		"only dotdot":     {"..", false},
		"trailing slash":  {"a/", false},
		"double slash":    {"a//b", false},
		"backslash":       {`a\b`, false},
		"windows dotdot":  {`..\..\x`, false},
		"nul":             {"a\x00b", false},
		"newline":         {"a\nb", false},
		"space":           {"a b", false},
		"percent":         {"a%2e%2e", false},
		"unicode":         {"kérnel", false},
		"too long":        {strings.Repeat("a", MaxLen+1), false},
		"longest":         {strings.Repeat("a", MaxLen), true},
		"dots in segment": {"a..b", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := Validate(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("Validate(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

// FuzzValidate checks that every accepted name is a clean relative path of allowed
// bytes: it cannot climb out of a folder, whatever uses it as a path.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "debian/12/linux", "../x", "a/../b", "/abs", "a\\b", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Validate(s) != nil {
			return
		}
		if path.Clean(s) != s || path.IsAbs(s) || s == ".." || strings.HasPrefix(s, "../") || strings.Contains(s, "/../") || strings.HasSuffix(s, "/..") {
			t.Fatalf("accepted unclean name %q", s)
		}
		if len(s) > MaxLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		for i := 0; i < len(s); i++ {
			if !allowed(s[i]) {
				t.Fatalf("accepted byte %q in %q", s[i], s)
			}
		}
	})
}
