package httpapi

import (
	"net/url"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzParams: the fast query reader agrees with url.ParseQuery on any input.
func FuzzParams(f *testing.F) {
	for _, s := range []string{
		"mac=52-54-00-12-34-56&arch=x86_64&platform=pcbios",
		"mac=52:54:00:12:34:56&mac=aa:bb:cc:dd:ee:ff&profile=",
		"mac=&mac=x&arch", "a=1;b=2&mac=1", "mac=%41%zz&arch=a+b", "&&=&mac==x=y",
		"product=Standard%20PC%20%28i440FX%20%2B%20PIIX%2C%201996%29&manufacturer=QEMU",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw)
		if got, want := parseParams(raw), paramsFrom(q); got != want {
			t.Fatalf("parseParams(%q) = %+v, url.ParseQuery gives %+v", raw, got, want)
		}
	})
}

// FuzzConfigQuery: a request line the raw router takes for the script endpoint
// is one fasthttp's own parsing routes there too, with the same query; and the
// forms iPXE sends are taken.
func FuzzConfigQuery(f *testing.F) {
	for _, s := range []string{
		"/ipxe/v1/config?mac=52-54-00-12-34-56&arch=x86_64", "/ipxe/v1/config", "/ipxe/v1/config?",
		"/ipxe/v1/config#x?mac=1", "/ipxe/v1/config?mac=1#frag", "/ipxe/v1/configx?mac=1",
		"/ipxe/v1//config?mac=1", "/ipxe/v1/config/../config?mac=1", "http://h/ipxe/v1/config?mac=1", "/IPXE/v1/config",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		q, ok := configQuery([]byte(uri))
		if strings.Contains(uri, "://") {
			// fasthttp reads any URI with "://" in it (in the query too) as an
			// absolute one; the raw router only takes origin-form URIs.
			return
		}
		var u fasthttp.URI
		if err := u.Parse(nil, []byte(uri)); err != nil {
			if ok {
				t.Fatalf("configQuery(%q) routed a URI fasthttp refuses: %v", uri, err)
			}
			return
		}
		if !ok {
			if strings.HasPrefix(uri, configPath+"?") && !strings.Contains(uri, "#") {
				t.Fatalf("configQuery(%q) refused iPXE's form", uri)
			}
			return
		}
		if string(u.Path()) != configPath || string(u.QueryString()) != string(q) {
			t.Fatalf("configQuery(%q) = %q; fasthttp: path %q, query %q", uri, q, u.Path(), u.QueryString())
		}
	})
}
