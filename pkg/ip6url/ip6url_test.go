package ip6url

import (
	"net/netip"
	"net/url"
	"testing"
)

func TestRebase(t *testing.T) {
	adv := netip.MustParseAddr("fd00:bc::1")
	for in, want := range map[string]string{
		"http://198.18.0.1:8080":          "http://[fd00:bc::1]:8080",
		"https://198.18.0.1/x?y=1":        "https://[fd00:bc::1]/x?y=1",
		"http://boot.example:8080":        "http://boot.example:8080",
		"http://[fd00:bc::9]:8080/a":      "http://[fd00:bc::9]:8080/a",
		"":                                "",
		"http://198.18.0.1:8081/a?b=%20c": "http://[fd00:bc::1]:8081/a?b=%20c",
	} {
		if got := Rebase(in, adv); got != want {
			t.Errorf("Rebase(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Rebase("http://198.18.0.1:8080", netip.MustParseAddr("198.18.0.2")); got != "http://198.18.0.1:8080" {
		t.Errorf("an IPv4 host changed the URL: %q", got)
	}
}

// FuzzRebase: Rebase never panics, and what it returns parses.
func FuzzRebase(f *testing.F) {
	f.Add("http://198.18.0.1:8080/boot.ipxe")
	f.Add("http://[::1]/")
	adv := netip.MustParseAddr("fd00:bc::1")
	f.Fuzz(func(t *testing.T, raw string) {
		out := Rebase(raw, adv)
		if _, err := url.Parse(raw); err == nil {
			if _, err := url.Parse(out); err != nil {
				t.Fatalf("Rebase(%q) = %q does not parse: %v", raw, out, err)
			}
		}
	})
}
