package filemap

import (
	"testing"

	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/google/go-cmp/cmp"
)

func TestResolve(t *testing.T) {
	base, err := Parse("ipxe.efi=ipxe-2024.efi, pxelinux.cfg/*=pxe-, pxelinux.cfg/01-*=mac-")
	if err != nil {
		t.Fatal(err)
	}
	over := FromProto(&tftpdv1.FileMap{Entries: map[string]string{"snponly.efi": "snp-v2.efi"}, Prefixes: map[string]string{"pxe/*": "x"}})
	m := Overlay(base, over)
	tests := map[string]struct {
		name, want string
		ok         bool
	}{
		"mapped":         {"ipxe.efi", "ipxe-2024.efi", true},
		"identity":       {"undionly.kpxe", "undionly.kpxe", true},
		"etcd overlay":   {"snponly.efi", "snp-v2.efi", true},
		"longest prefix": {"pxelinux.cfg/01-52-54-00-12-34-56", "mac-52-54-00-12-34-56", true},
		"prefix":         {"pxelinux.cfg/default", "pxe-default", true},
		"prefix alone":   {"pxelinux.cfg/", "", false},
		"unknown":        {"vmlinuz", "", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := m.Resolve(tt.name)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Resolve(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
			}
		})
	}
	strict := Overlay(base, FromProto(&tftpdv1.FileMap{NoIdentity: true}))
	if _, ok := strict.Resolve("undionly.kpxe"); ok {
		t.Errorf("no_identity map resolved a well-known name")
	}
	want := []string{"grubaa64.efi", "grubx64.efi", "ipxe-2024.efi", "ipxe-arm64.efi", "ipxe.pxe", "shimx64.efi", "snponly-arm64.efi", "snponly.efi", "undionly.kkpxe", "undionly.kpxe"}
	if d := cmp.Diff(want, base.Artifacts()); d != "" {
		t.Errorf("Artifacts (-want +got)\n%s", d)
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"ipxe.efi", "=x", "a=", "a"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

// FuzzParse: a map parses or fails; what it resolves is never empty.
func FuzzParse(f *testing.F) {
	f.Add("ipxe.efi=a,pxelinux.cfg/*=b", "pxelinux.cfg/x")
	f.Fuzz(func(t *testing.T, spec, name string) {
		m, err := Parse(spec)
		if err != nil {
			return
		}
		if a, ok := m.Resolve(name); ok && a == "" {
			t.Fatalf("resolved %q to an empty artifact", name)
		}
	})
}
