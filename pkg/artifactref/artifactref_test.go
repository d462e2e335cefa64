package artifactref

import (
	"strings"
	"testing"
)

const d = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestParse(t *testing.T) {
	good := map[string]Ref{
		"linux":                       {Name: "linux"},
		"debian/12/linux":             {Name: "debian/12/linux"},
		"debian/12/linux@sha256:" + d: {Name: "debian/12/linux", SHA256: d},
		"a@sha256:" + d:               {Name: "a", SHA256: d},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("Parse(%q).String() = %q", in, got.String())
		}
		if Name(in) != want.Name {
			t.Errorf("Name(%q) = %q", in, Name(in))
		}
	}
	bad := []string{
		"", "@sha256:" + d, "linux@", "linux@sha256:", "linux@sha256:" + d[:63],
		"linux@sha256:" + d + "0", "linux@sha256:" + strings.ToUpper(d), "linux@md5:" + d,
		"linux@sha256:" + d + "@sha256:" + d, "linux@sha256:" + d[:63] + "g",
	}
	for _, in := range bad {
		if r, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, r)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"linux", "debian/12/linux@sha256:" + d, "x@sha256:", "@", "a@b@c", "a@sha256:" + strings.ToUpper(d)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		if r.Name == "" || strings.Contains(r.Name, "@") {
			t.Fatalf("Parse(%q) accepted name %q", s, r.Name)
		}
		if r.SHA256 != "" && !ValidDigest(r.SHA256) {
			t.Fatalf("Parse(%q) accepted digest %q", s, r.SHA256)
		}
		if r.String() != s {
			t.Fatalf("Parse(%q).String() = %q: not a round trip", s, r.String())
		}
		if Name(s) != r.Name {
			t.Fatalf("Name(%q) = %q, Parse says %q", s, Name(s), r.Name)
		}
	})
}
