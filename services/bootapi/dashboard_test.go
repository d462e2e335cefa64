package bootapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
)

// TestDashboardServed: bootapi serves its dashboard on the HTTP port behind
// the API's tokens, with the configured trace link, and a boot a machine made
// shows on it. (The pages themselves: package internal/ui and the browser
// test in test/e2e.)
func TestDashboardServed(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st, func(c *bootapi.Config) { c.TraceURL = "http://jaeger.test:16686/trace/{trace_id}" })
	h.seed(t, "52:54:00:00:d0:01")
	if code, _ := h.get(t, "/ipxe/v1/config?mac=52:54:00:00:d0:01"); code != 200 {
		t.Fatalf("script: %d", code)
	}
	viewer := testkit.Token(t, st, auth.RoleViewer)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", h.base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/ui/boots", ""); code != http.StatusSeeOther {
		t.Errorf("anonymous /ui/boots: %d, want a redirect to the login page", code)
	}
	testkit.Eventually(t, "the machine's boot on the dashboard", func() bool {
		code, body := get("/ui/boots", viewer)
		return code == 200 && strings.Contains(body, `data-mac="52:54:00:00:d0:01"`)
	})
	r, err := h.sessions.GetSession(t.Context(), &bootapiv1.GetSessionRequest{Mac: "52:54:00:00:d0:01"})
	if err != nil {
		t.Fatal(err)
	}
	code, body := get("/ui/boots/52:54:00:00:d0:01", viewer)
	if code != 200 || !strings.Contains(body, "http://jaeger.test:16686/trace/"+r.GetSession().GetTraceId()) || !strings.Contains(body, "script") {
		t.Errorf("boot page: %d\n%s", code, body)
	}
	if code, _ := get("/uix", viewer); code != http.StatusNotFound {
		t.Errorf("/uix: %d, want 404", code)
	}
}

func TestTraceURLValidated(t *testing.T) {
	for _, u := range []string{"jaeger:16686/trace/{trace_id}", "javascript:alert(1)//{trace_id}", "http://jaeger:16686/trace/", "http:///{trace_id}"} {
		cfg := bootapi.DefaultConfig()
		cfg.Store, cfg.TraceURL = storetest.New(t), u
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "trace URL") {
			t.Errorf("trace URL %q: %v, want an error naming it", u, err)
		}
	}
}
