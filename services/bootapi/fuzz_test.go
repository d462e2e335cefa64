package bootapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
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
		rec := httptest.NewRecorder()
		creq := httptest.NewRequest("GET", "/ipxe/v1/config", nil)
		creq.URL.RawQuery = query // as the wire would carry it, unvalidated
		h.ServeHTTP(rec, creq)
		switch {
		case rec.Code == http.StatusOK:
			if !strings.HasPrefix(rec.Body.String(), "#!ipxe\n") {
				t.Fatalf("200 without a script: %q", rec.Body.String())
			}
		case rec.Code >= 500:
			t.Fatalf("config %q: %d %s", query, rec.Code, rec.Body.String())
		}
		req := httptest.NewRequest("POST", "/ipxe/v1/report", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("report %q: %d %s", form, rec.Code, rec.Body.String())
		}
	})
}
