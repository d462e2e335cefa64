package bootapi_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/valyala/fasthttp"
)

// FuzzHTTP sends arbitrary query strings to the config endpoint and arbitrary form
// bodies to the report endpoint of a real bootapi (embedded etcd): every answer is
// a script or a 4xx that says what was wrong, never a 5xx or a crash.
func FuzzHTTP(f *testing.F) {
	h, st := startHandler(f)
	const mac = "52:54:00:12:34:56"
	if _, err := st.Put(context.Background(), "/bootchain/v1/machines/"+mac, &bootapiv1.Machine{Mac: mac, Hostname: "n1"}); err != nil {
		f.Fatal(err)
	}

	f.Add("mac=52:54:00:12:34:56&arch=x86_64", "job=x&token=y&state=running")
	f.Add("mac=%ff%00&profile=../../x", "state=succeeded&progress=101")
	f.Add("mac=52-54-00-12-34-56&profile=${x}&uuid=%0a", "job=&token=&state=&message=%0ashell")
	f.Fuzz(func(t *testing.T, query, form string) {
		var creq fasthttp.Request
		creq.SetRequestURI("/ipxe/v1/config")
		creq.URI().SetQueryString(query) // as the wire would carry it, unvalidated
		var crc fasthttp.RequestCtx
		serve(h, &crc, &creq)
		switch code, body := crc.Response.StatusCode(), string(crc.Response.Body()); {
		case code == fasthttp.StatusOK:
			if !strings.HasPrefix(body, "#!ipxe\n") {
				t.Fatalf("200 without a script: %q", body)
			}
		case code >= 500:
			t.Fatalf("config %q: %d %s", query, code, body)
		}
		var req fasthttp.Request
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI("/ipxe/v1/report")
		req.Header.SetContentType("application/x-www-form-urlencoded")
		req.SetBodyString(form)
		var rc fasthttp.RequestCtx
		serve(h, &rc, &req)
		if code := rc.Response.StatusCode(); code >= 500 {
			t.Fatalf("report %q: %d %s", form, code, rc.Response.Body())
		}
		// The same fields in the URL: a token there is refused before anything
		// else, whatever the rest says.
		var qreq fasthttp.Request
		qreq.Header.SetMethod(fasthttp.MethodPost)
		qreq.SetRequestURI("/ipxe/v1/report")
		qreq.URI().SetQueryString(form)
		var qrc fasthttp.RequestCtx
		serve(h, &qrc, &qreq)
		code := qrc.Response.StatusCode()
		if code >= 500 {
			t.Fatalf("report ?%q: %d %s", form, code, qrc.Response.Body())
		}
		if q, _ := url.ParseQuery(form); q.Has("token") && code != fasthttp.StatusBadRequest {
			t.Fatalf("report with a token in the query %q: %d", form, code)
		}
	})
}
