package httpapi

import (
	"net/url"
	"strings"
)

// params are the query parameters /ipxe/v1/config reads, with url.Values.Get's
// meaning (the first value of each key; "" when absent).
type params struct {
	mac, arch, platform, uuid, serial, manufacturer, product, profile string
}

// maxPlainParams bounds the parameters parseParams splits itself; longer
// queries take url.ParseQuery's.
const maxPlainParams = 32

// parseParams reads raw (a URL's RawQuery) exactly as URL.Query().Get would, but
// without building a url.Values (a map and a slice per key) when nothing in raw
// needs unescaping: iPXE's plain requests. Anything else goes through
// url.ParseQuery. FuzzParams checks the two agree.
func parseParams(raw string) params {
	if strings.ContainsAny(raw, "%+;") || strings.Count(raw, "&") >= maxPlainParams {
		q, _ := url.ParseQuery(raw) // URL.Query's semantics: keep what parsed
		return paramsFrom(q)
	}
	var p params
	var seen uint8
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if f, bit := p.field(k); f != nil && seen&bit == 0 {
			*f, seen = v, seen|bit
		}
	}
	return p
}

// field is the member for key k and its bit in parseParams' seen set.
func (p *params) field(k string) (*string, uint8) {
	switch k {
	case "mac":
		return &p.mac, 1
	case "arch":
		return &p.arch, 2
	case "platform":
		return &p.platform, 4
	case "uuid":
		return &p.uuid, 8
	case "serial":
		return &p.serial, 16
	case "manufacturer":
		return &p.manufacturer, 32
	case "product":
		return &p.product, 64
	case "profile":
		return &p.profile, 128
	}
	return nil, 0
}

func paramsFrom(q url.Values) params {
	return params{
		mac: q.Get("mac"), arch: q.Get("arch"), platform: q.Get("platform"), uuid: q.Get("uuid"),
		serial: q.Get("serial"), manufacturer: q.Get("manufacturer"), product: q.Get("product"), profile: q.Get("profile"),
	}
}
