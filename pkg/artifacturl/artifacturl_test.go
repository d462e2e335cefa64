package artifacturl

import (
	"net/url"
	"strings"
	"testing"
)

func TestHTTPURL(t *testing.T) {
	tests := map[string]struct {
		base, name, tp, want string
	}{
		"plain":       {"http://10.0.0.1:8081", "undionly.kpxe", "", "http://10.0.0.1:8081/artifacts/undionly.kpxe"},
		"slash base":  {"http://h:8081/", "a", "", "http://h:8081/artifacts/a"},
		"sub folders": {"http://h", "debian/12/linux", "", "http://h/artifacts/debian/12/linux"},
		"traceparent": {"http://h", "k", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "http://h/artifacts/k?traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"escaped":     {"http://h", "a b?#", "x&y", "http://h/artifacts/a%20b%3F%23?traceparent=x%26y"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := HTTPURL(tc.base, tc.name, tc.tp); got != tc.want {
				t.Errorf("HTTPURL(%q, %q, %q) = %q, want %q", tc.base, tc.name, tc.tp, got, tc.want)
			}
		})
	}
}

// FuzzHTTPURL checks that whatever the name and traceparent, the URL parses back to
// the same path and query value.
func FuzzHTTPURL(f *testing.F) {
	f.Add("debian/12/linux", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	f.Add("a b?#%", "x&y=z")
	f.Fuzz(func(t *testing.T, name, tp string) {
		if strings.ContainsAny(name+tp, "\x00") {
			return
		}
		u, err := url.Parse(HTTPURL("http://h:8081", name, tp))
		if err != nil {
			t.Fatalf("unparsable URL for %q %q: %v", name, tp, err)
		}
		if got := strings.TrimPrefix(u.Path, PathPrefix); got != name {
			t.Fatalf("path %q, want name %q", got, name)
		}
		if got := u.Query().Get("traceparent"); got != tp {
			t.Fatalf("traceparent %q, want %q", got, tp)
		}
	})
}
