// Package filemap maps the file names firmware asks tftpd for to artifact names.
//
// A site's map is the one given on the command line overlaid by the FileMap stored
// in etcd at tftp/<site>/map. Lookup is an ordered chain where the first match wins:
// an exact entry, then the longest prefix entry ("pxelinux.cfg/" -> "pxelinux-"),
// then the identity for the well-known iPXE binaries, then not found.
//
//	m, _ := filemap.Parse("ipxe.efi=ipxe-v2.efi,pxelinux.cfg/*=pxe-")
//	art, ok := m.Resolve("pxelinux.cfg/01-52-54-00-12-34-56") // "pxe-01-52-54-00-12-34-56"
package filemap

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
)

// Known are the boot files firmware asks for that map to artifacts of the same name
// unless the map says otherwise: iPXE's; for Secure Boot's Microsoft-signed
// path Debian's signed shim and the GRUB it loads from the same folder; for
// arm64, Debian's signed GRUB (docs/firmware.md).
var Known = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe-arm64.efi", "snponly-arm64.efi", "ipxe.pxe", "undionly.kkpxe",
	"shimx64.efi", "grubx64.efi", "grubaa64.efi"}

// Map is an immutable file-name map.
type Map struct {
	exact      map[string]string
	prefixes   []prefix // longest first
	noIdentity bool
}

type prefix struct{ from, to string }

// Parse reads "name=artifact" pairs separated by commas; a name ending in "*" is a
// prefix entry. An empty string is the default map (identity for Known names).
func Parse(s string) (*Map, error) {
	fm := &tftpdv1.FileMap{Entries: map[string]string{}, Prefixes: map[string]string{}}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		from, to, ok := strings.Cut(pair, "=")
		from, to = strings.TrimSpace(from), strings.TrimSpace(to)
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("filemap: %q: want name=artifact", pair)
		}
		if p, isPrefix := strings.CutSuffix(from, "*"); isPrefix {
			fm.Prefixes[p] = to
			continue
		}
		fm.Entries[from] = to
	}
	return FromProto(fm), nil
}

// FromProto builds a Map from its stored form (nil is the default map).
func FromProto(fm *tftpdv1.FileMap) *Map {
	m := &Map{exact: map[string]string{}}
	if fm == nil {
		return m
	}
	maps.Copy(m.exact, fm.GetEntries())
	for from, to := range fm.GetPrefixes() {
		m.prefixes = append(m.prefixes, prefix{from, to})
	}
	sortPrefixes(m.prefixes)
	m.noIdentity = fm.GetNoIdentity()
	return m
}

func sortPrefixes(p []prefix) {
	sort.Slice(p, func(i, j int) bool {
		if len(p[i].from) != len(p[j].from) {
			return len(p[i].from) > len(p[j].from)
		}
		return p[i].from < p[j].from
	})
}

// Overlay returns base with over's entries replacing base's (over wins, its
// no_identity too when set).
func Overlay(base, over *Map) *Map {
	if over == nil {
		return base
	}
	m := &Map{exact: maps.Clone(base.exact), noIdentity: base.noIdentity || over.noIdentity}
	maps.Copy(m.exact, over.exact)
	seen := map[string]bool{}
	for _, p := range over.prefixes {
		m.prefixes = append(m.prefixes, p)
		seen[p.from] = true
	}
	for _, p := range base.prefixes {
		if !seen[p.from] {
			m.prefixes = append(m.prefixes, p)
		}
	}
	sortPrefixes(m.prefixes)
	return m
}

// Resolve returns the artifact for a requested (already cleaned) name.
func (m *Map) Resolve(name string) (string, bool) {
	if a, ok := m.exact[name]; ok {
		return a, true
	}
	for _, p := range m.prefixes {
		if rest, ok := strings.CutPrefix(name, p.from); ok && rest != "" {
			return p.to + rest, true
		}
	}
	if !m.noIdentity {
		for _, k := range Known {
			if k == name {
				return name, true
			}
		}
	}
	return "", false
}

// Artifacts lists the artifacts the map names exactly (prefix entries excluded),
// to warm the cache with.
func (m *Map) Artifacts() []string {
	set := map[string]bool{}
	for _, a := range m.exact {
		set[a] = true
	}
	if !m.noIdentity {
		for _, k := range Known {
			if _, mapped := m.exact[k]; !mapped {
				set[k] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}
