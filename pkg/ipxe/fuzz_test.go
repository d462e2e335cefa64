package ipxe_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/ipxe"
)

// FuzzBuilder feeds arbitrary data through every door and checks the rendered
// script: exactly the lines bootchain wrote, no expansion, no separator token.
func FuzzBuilder(f *testing.F) {
	for _, s := range []string{"plain", "${x}", "a||b", "a\nb", "#c", ":l", "x$", "$ {", "%24%7B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b ipxe.Builder
		b.Line("echo", ipxe.Text(s))
		b.Line("kernel", ipxe.Word(s))
		u := &url.URL{Scheme: "http", Host: "h", Path: "/a/" + s, RawQuery: url.Values{"v": {s}}.Encode()}
		b.Line("chain", ipxe.URL(u))
		b.Comment(s)
		out, err := b.Script()
		if err != nil {
			// Rejected values must produce no script at all.
			if out != "" {
				t.Fatalf("script despite error")
			}
			var safe ipxe.Builder
			safe.Line("chain", ipxe.URL(u))
			out, err = safe.Script()
			if err != nil {
				t.Fatalf("URL door refused %q: %v", s, err)
			}
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if lines[0] != "#!ipxe" {
			t.Fatalf("first line %q", lines[0])
		}
		for _, l := range lines[1:] {
			if strings.Contains(l, "${") || strings.HasPrefix(l, ":") {
				t.Fatalf("unsafe line %q from %q", l, s)
			}
			for _, tok := range strings.Fields(l) {
				if tok == "||" || tok == "&&" || strings.Contains(tok, "||") || strings.Contains(tok, "&&") {
					t.Fatalf("separator in %q from %q", l, s)
				}
			}
			if strings.ContainsAny(l, "\r\x00") {
				t.Fatalf("control char in %q", l)
			}
		}
		if n := len(lines); n < 2 || n > 5 {
			t.Fatalf("%d lines from %q: %q", n, s, out)
		}
	})
}
