package validate_test

import (
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/artifactref"
	"github.com/bootchain/bootchain/pkg/ipxe"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
)

var sum = strings.Repeat("0f", 32)

func TestArtifactRef(t *testing.T) {
	for _, s := range []string{"linux", "debian/12/linux", "debian/12/linux@sha256:" + sum} {
		if err := validate.ArtifactRef("f", s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "../x@sha256:" + sum, "linux@sha256:" + sum[:10], "linux@" + sum, "a b@sha256:" + sum, "linux@sha256:" + strings.ToUpper(sum)} {
		if err := validate.ArtifactRef("f", s); err == nil {
			t.Errorf("%q: accepted", s)
		}
	}
}

// FuzzArtifactRef: a reference validate accepts parses, and its name and digest
// are safe in a URL path and an iPXE script.
func FuzzArtifactRef(f *testing.F) {
	for _, s := range []string{"linux", "debian/12/linux@sha256:" + sum, "a@sha256:", "a@@", "x/../y@sha256:" + sum} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validate.ArtifactRef("f", s) != nil {
			return
		}
		r, err := artifactref.Parse(s)
		if err != nil {
			t.Fatalf("validate accepted %q, Parse refuses: %v", s, err)
		}
		if err := ipxe.CheckWord(r.Name); err != nil {
			t.Fatalf("accepted name %q is not a safe iPXE word: %v", r.Name, err)
		}
		if strings.Contains(r.Name, "..") || strings.ContainsAny(r.Name, "?#%@ ") {
			t.Fatalf("accepted name %q", r.Name)
		}
	})
}
