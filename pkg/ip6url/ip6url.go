// Package ip6url gives a service's URLs to IPv6 clients: a base URL whose host
// is an IPv4 literal (a site's http://198.18.0.1:8081) is given to a client on
// an IPv6 boot network with the service's IPv6 address instead, in brackets,
// with the same scheme, port, path and query. A host name is left alone: DNS
// answers its AAAA.
//
//	ip6url.Rebase("http://198.18.0.1:8080/boot.ipxe", netip.MustParseAddr("fd00:bc::1"))
//	// "http://[fd00:bc::1]:8080/boot.ipxe"
package ip6url

import (
	"net/netip"
	"net/url"
)

// Rebase returns raw with an IPv4-literal host replaced by host; raw as is
// when it does not parse, has another host, or host is not an IPv6 address.
func Rebase(raw string, host netip.Addr) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if r := RebaseURL(u, host); r != u {
		return r.String()
	}
	return raw
}

// RebaseURL is Rebase for a parsed URL: a copy when it changed, else u.
func RebaseURL(u *url.URL, host netip.Addr) *url.URL {
	if u == nil || !host.Is6() || host.Is4In6() {
		return u
	}
	if a, err := netip.ParseAddr(u.Hostname()); err != nil || !a.Is4() {
		return u
	}
	c := *u
	c.Host = Host(host)
	if p := u.Port(); p != "" {
		c.Host += ":" + p
	}
	return &c
}

// Host is a as a URL host: IPv6 in brackets.
func Host(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "[" + a.WithZone("").String() + "]"
	}
	return a.String()
}
