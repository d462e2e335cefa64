package bootapi_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// TestHTTPSurface pins what iPXE and installers see of bootapi's HTTP server, over
// a real socket with net/http's client: status codes, error texts, the headers of
// scripts, HEAD on the GET routes, 405s with Allow, and the report body limit.
func TestHTTPSurface(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t, mac)
	type answer struct {
		Code   int
		Header map[string]string // only the headers named in want
		Body   string            // "*" : any
	}
	script := map[string]string{"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", "Server": ""}
	errHdr := map[string]string{"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
	form := func(vals string) io.Reader { return strings.NewReader(vals) }
	tests := map[string]struct {
		method, path string
		body         io.Reader
		want         answer
	}{
		"bootstrap":              {"GET", "/boot.ipxe", nil, answer{200, script, "*"}},
		"bootstrap HEAD":         {"HEAD", "/boot.ipxe", nil, answer{200, script, ""}},
		"config":                 {"GET", "/ipxe/v1/config?mac=" + mac, nil, answer{200, script, "*"}},
		"config HEAD":            {"HEAD", "/ipxe/v1/config?mac=" + mac, nil, answer{200, script, ""}},
		"config bad mac":         {"GET", "/ipxe/v1/config?mac=52:54:00", nil, answer{400, errHdr, "mac: not a 48-bit MAC address: \"52:54:00\"\n"}},
		"config no mac":          {"GET", "/ipxe/v1/config?arch=x86_64", nil, answer{400, errHdr, "mac: not a 48-bit MAC address: \"\"\n"}},
		"config POST":            {"POST", "/ipxe/v1/config", nil, answer{405, map[string]string{"Allow": "GET, HEAD"}, "Method Not Allowed\n"}},
		"healthz":                {"GET", "/healthz", nil, answer{200, nil, "ok\n"}},
		"healthz HEAD":           {"HEAD", "/healthz", nil, answer{200, nil, ""}},
		"bootstrap PUT":          {"PUT", "/boot.ipxe", nil, answer{405, map[string]string{"Allow": "GET, HEAD"}, "Method Not Allowed\n"}},
		"report GET":             {"GET", "/ipxe/v1/report", nil, answer{405, map[string]string{"Allow": "POST"}, "Method Not Allowed\n"}},
		"unknown path":           {"GET", "/nope", nil, answer{404, nil, "404 page not found\n"}},
		"unknown path POST":      {"POST", "/ipxe/v1/config/", nil, answer{404, nil, "404 page not found\n"}},
		"report bad state":       {"POST", "/ipxe/v1/report", form("job=j&token=t&state=done"), answer{400, errHdr, "state: want running, succeeded or failed\n"}},
		"report bad progress":    {"POST", "/ipxe/v1/report", form("job=j&token=t&state=running&progress=101"), answer{400, errHdr, "progress: want 0-100\n"}},
		"report no token":        {"POST", "/ipxe/v1/report?job=j", form("state=running"), answer{400, errHdr, "job and token are required\n"}},
		"report job from query":  {"POST", "/ipxe/v1/report?job=nosuchjob", form("token=t&state=running"), answer{404, errHdr, "job: no such job\n"}},
		"report bad escape":      {"POST", "/ipxe/v1/report", form("job=j&token=%zz&state=running"), answer{400, errHdr, "body: invalid URL escape \"%zz\"\n"}},
		"report 64 KiB accepted": {"POST", "/ipxe/v1/report", form("state=x&message=" + strings.Repeat("m", 64<<10-len("state=x&message="))), answer{400, errHdr, "state: want running, succeeded or failed\n"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, h.base+tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.body != nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got := answer{Code: resp.StatusCode, Body: string(b)}
			if tc.want.Body == "*" {
				got.Body = "*"
			}
			if len(tc.want.Header) > 0 {
				got.Header = map[string]string{}
				for k := range tc.want.Header {
					got.Header[k] = resp.Header.Get(k)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s %s (-want +got):\n%s", tc.method, tc.path, diff)
			}
			if cl := resp.Header.Get("Content-Length"); tc.want.Code == 200 && tc.method == "GET" && cl != strconv.Itoa(len(b)) {
				t.Errorf("Content-Length %q for a %d-byte body", cl, len(b))
			}
		})
	}

	// A HEAD answers the Content-Length the GET would.
	for _, p := range []string{"/boot.ipxe", "/ipxe/v1/config?mac=" + mac} {
		code, body := h.get(t, p)
		resp, err := http.Head(h.base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if code != 200 || resp.ContentLength != int64(len(body)) {
			t.Errorf("HEAD %s: Content-Length %d, GET: %d bytes (%d)", p, resp.ContentLength, len(body), code)
		}
	}
}

// TestReportBodyLimit: a report body over 64 KiB is refused, naming the body. The
// request goes out as its header alone: the answer comes before any of the body is
// read, and a server closing a socket with unread data would reset it.
func TestReportBodyLimit(t *testing.T) {
	h := start(t, storetest.New(t))
	u, _ := url.Parse(h.base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(c, "POST /ipxe/v1/report HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n", u.Host, 64<<10+1)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(string(b), "body: ") {
		t.Fatalf("oversized report: %d %q, want 413 naming the body", resp.StatusCode, b)
	}
}
