package auth

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIdentityURIRoundTrip(t *testing.T) {
	for name, id := range map[string]Identity{
		"admin":        {Name: "admin", Kind: KindCert, Role: RoleAdmin},
		"site-limited": {Name: "ops.a", Kind: KindCert, Role: RoleOperator, Sites: []string{"a", "b-2"}},
		"service":      {Name: "tftpd-a", Kind: KindCert, Role: RoleService, Sites: []string{"a"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseIdentityURI(IdentityURI(id))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(id, got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseIdentityURIRejects(t *testing.T) {
	for name, s := range map[string]string{
		"other scheme":  "spiffe://admin/x",
		"no role":       "bootchain:///x",
		"unknown role":  "bootchain://root/x",
		"upper role":    "bootchain://ADMIN/x",
		"no name":       "bootchain://admin/",
		"nested name":   "bootchain://admin/a/b",
		"bad site":      "bootchain://admin/x?sites=a,,b",
		"unknown param": "bootchain://admin/x?role=admin",
		"user info":     "bootchain://u@admin/x",
		"port":          "bootchain://admin:1/x",
	} {
		t.Run(name, func(t *testing.T) {
			if id, err := ParseIdentityURI(s); err == nil {
				t.Fatalf("ParseIdentityURI(%q) = %+v, want an error", s, id)
			}
		})
	}
	if _, err := ParseIdentityURI("https://example.org/"); !errors.Is(err, ErrNoIdentityURI) {
		t.Errorf("https URI: err = %v, want ErrNoIdentityURI", err)
	}
}

func FuzzParseIdentityURI(f *testing.F) {
	for _, s := range []string{"bootchain://admin/admin", "bootchain://operator/ops?sites=a,b", "bootchain://x/%00", "bootchain://service/a?sites="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentityURI(s)
		if err != nil {
			return
		}
		if !ValidName(id.Name) || id.Kind != KindCert {
			t.Fatalf("accepted %q as %+v", s, id)
		}
		again, err := ParseIdentityURI(IdentityURI(id))
		if err != nil || !cmp.Equal(id, again) {
			t.Fatalf("%q -> %+v does not round-trip: %+v, %v", s, id, again, err)
		}
	})
}
