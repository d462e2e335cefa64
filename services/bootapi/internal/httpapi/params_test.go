package httpapi

import (
	"net/url"
	"testing"
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
