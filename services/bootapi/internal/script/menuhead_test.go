package script

import "testing"

// FuzzMenuHead: the joined title lines are what the builder writes, and the
// builder refuses nothing the joined path takes.
func FuzzMenuHead(f *testing.F) {
	for _, s := range [][3]string{
		{"52:54:00:12:34:56", "node1", "lab"}, {"52:54:00:12:34:56", "", ""}, {"", "", ""}, {"", "", "lab"}, {"52:54:00:12:34:56", "a b", "x"},
		{"52:54:00:12:34:56", "${x}", "lab"}, {"52:54:00:12:34:56", "n", "#site"}, {"52:54:00:12:34:56", ":x", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, mac, hostname, site string) {
		got, gerr := MenuHead(mac, hostname, site)
		want, werr := menuHeadBuilt(mac, hostname, site)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Fatalf("MenuHead(%q, %q, %q) = %q, %v; the builder gives %q, %v", mac, hostname, site, got, gerr, want, werr)
		}
	})
}
