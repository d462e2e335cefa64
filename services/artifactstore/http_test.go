package artifactstore_test

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// TestHTTPRangeSemantics checks GET/HEAD, conditional requests and ranges with
// Go's HTTP client.
func TestHTTPRangeSemantics(t *testing.T) {
	in := start(t, storetest.Start(t), opts{})
	data := randBytes(t, 10000)
	a := mustUpload(t, in, "debian/12/linux", data)
	etag := `"` + a.GetSha256() + `"`
	url := in.base + "/artifacts/debian/12/linux"
	resp, _ := httpGet(t, url, nil)
	lastMod := resp.Header.Get("Last-Modified")
	if lastMod == "" {
		t.Fatal("no Last-Modified")
	}
	old := a.GetUpdateTime().AsTime().Add(-time.Hour).UTC().Format(http.TimeFormat)

	tests := map[string]struct {
		hdr        map[string]string
		status     int
		body       []byte
		contentRng string
	}{
		"whole":                 {nil, 200, data, ""},
		"first 100":             {map[string]string{"Range": "bytes=0-99"}, 206, data[:100], "bytes 0-99/10000"},
		"suffix":                {map[string]string{"Range": "bytes=-1"}, 206, data[9999:], "bytes 9999-9999/10000"},
		"open":                  {map[string]string{"Range": "bytes=9990-"}, 206, data[9990:], "bytes 9990-9999/10000"},
		"clamped":               {map[string]string{"Range": "bytes=9990-20000"}, 206, data[9990:], "bytes 9990-9999/10000"},
		"past end":              {map[string]string{"Range": "bytes=10000-"}, 416, nil, "bytes */10000"},
		"malformed":             {map[string]string{"Range": "bytes=5-1"}, 416, nil, "bytes */10000"},
		"other unit":            {map[string]string{"Range": "lines=1-2"}, 200, data, ""},
		"if-range etag match":   {map[string]string{"Range": "bytes=0-9", "If-Range": etag}, 206, data[:10], "bytes 0-9/10000"},
		"if-range etag stale":   {map[string]string{"Range": "bytes=0-9", "If-Range": `"0000"`}, 200, data, ""},
		"if-range weak":         {map[string]string{"Range": "bytes=0-9", "If-Range": "W/" + etag}, 200, data, ""},
		"if-range date match":   {map[string]string{"Range": "bytes=0-9", "If-Range": lastMod}, 206, data[:10], "bytes 0-9/10000"},
		"if-range date stale":   {map[string]string{"Range": "bytes=0-9", "If-Range": old}, 200, data, ""},
		"if-none-match":         {map[string]string{"If-None-Match": etag}, 304, nil, ""},
		"if-none-match list":    {map[string]string{"If-None-Match": `"x", W/` + etag}, 304, nil, ""},
		"if-none-match star":    {map[string]string{"If-None-Match": "*"}, 304, nil, ""},
		"if-none-match other":   {map[string]string{"If-None-Match": `"x"`}, 200, data, ""},
		"if-modified-since":     {map[string]string{"If-Modified-Since": lastMod}, 304, nil, ""},
		"if-modified-since old": {map[string]string{"If-Modified-Since": old}, 200, data, ""},
		"overlapping to whole":  {map[string]string{"Range": "bytes=0-9999,0-9999"}, 200, data, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, body := httpGet(t, url, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if tc.status == 416 {
				body = nil
			}
			if !bytes.Equal(body, tc.body) {
				t.Errorf("body %d bytes, want %d", len(body), len(tc.body))
			}
			if got := resp.Header.Get("Content-Range"); got != tc.contentRng {
				t.Errorf("Content-Range %q, want %q", got, tc.contentRng)
			}
			if tc.status != 304 && resp.ContentLength < 0 {
				t.Errorf("no Content-Length")
			}
			if tc.status != 416 && resp.Header.Get("ETag") != etag {
				t.Errorf("ETag %q", resp.Header.Get("ETag"))
			}
		})
	}

	t.Run("multi", func(t *testing.T) {
		resp, body := httpGet(t, url, map[string]string{"Range": "bytes=0-9, 100-199,-5"})
		if resp.StatusCode != 206 || resp.ContentLength != int64(len(body)) {
			t.Fatalf("status %d, Content-Length %d, body %d", resp.StatusCode, resp.ContentLength, len(body))
		}
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/byteranges" {
			t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		var got []string
		var parts [][]byte
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(p)
			got = append(got, p.Header.Get("Content-Range"))
			parts = append(parts, b)
		}
		if diff := cmp.Diff([]string{"bytes 0-9/10000", "bytes 100-199/10000", "bytes 9995-9999/10000"}, got); diff != "" {
			t.Errorf("parts (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([][]byte{data[:10], data[100:200], data[9995:]}, parts); diff != "" {
			t.Errorf("part bodies differ")
		}
	})

	t.Run("head", func(t *testing.T) {
		resp, err := http.Head(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != 10000 || resp.Header.Get("Accept-Ranges") != "bytes" {
			t.Errorf("HEAD: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
		}
	})
	t.Run("method", func(t *testing.T) {
		resp, err := http.Post(url, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST: %d", resp.StatusCode)
		}
	})
	// Traversal: raw request lines, so that no client cleans the path first.
	for _, path := range []string{"/artifacts/../../etc/passwd", "/artifacts/%2e%2e/%2e%2e/etc/passwd", "/artifacts/a/..%2f..%2fb", "/artifacts//etc/passwd", "/artifacts/a%00b", "/artifacts/a%5c..%5cb", "/artifacts/", "http://x/artifacts/debian/../debian/12/linux"} {
		t.Run("raw "+path, func(t *testing.T) {
			status := rawGet(t, in.srv.HTTPAddr().String(), path)
			if status != 400 && status != 404 {
				t.Errorf("GET %s: %d, want 400 or 404", path, status)
			}
		})
	}
}

func rawGet(t *testing.T, addr, path string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	b, _ := io.ReadAll(c)
	var code int
	fmt.Sscanf(string(b), "HTTP/1.1 %d", &code)
	return code
}

// TestHTTPWithCurl checks ranges with curl as the client.
func TestHTTPWithCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	in := start(t, storetest.Start(t), opts{})
	data := randBytes(t, 1<<20)
	a := mustUpload(t, in, "ipxe.efi", data)
	url := in.base + "/artifacts/ipxe.efi"
	curl := func(args ...string) (string, []byte) {
		t.Helper()
		dir := t.TempDir()
		args = append([]string{"-sS", "--noproxy", "*", "-D", dir + "/h", "-o", dir + "/b"}, args...)
		out, err := exec.Command("curl", append(args, url)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		h, _ := exec.Command("cat", dir+"/h").Output()
		b, _ := exec.Command("cat", dir+"/b").Output()
		return string(h), b
	}
	h, b := curl("-r", "0-99")
	if !strings.Contains(h, " 206") || !bytes.Equal(b, data[:100]) || !strings.Contains(h, "Content-Range: bytes 0-99/1048576") {
		t.Errorf("-r 0-99: %s, %d bytes", h, len(b))
	}
	h, b = curl("-r", "0-1,10-11")
	if !strings.Contains(h, "multipart/byteranges") || !bytes.Contains(b, data[10:12]) || !strings.Contains(string(b), "Content-Range: bytes 10-11/1048576") {
		t.Errorf("multi-range: %s", h)
	}
	h, b = curl("-r", "5-9", "-H", `If-Range: "`+a.GetSha256()+`"`)
	if !strings.Contains(h, " 206") || !bytes.Equal(b, data[5:10]) {
		t.Errorf("If-Range match: %s", h)
	}
	h, b = curl("-r", "5-9", "-H", `If-Range: "stale"`)
	if !strings.Contains(h, " 200") || !bytes.Equal(b, data) {
		t.Errorf("If-Range stale: %s", h)
	}
	h, _ = curl("-r", "2000000-")
	if !strings.Contains(h, " 416") || !strings.Contains(h, "Content-Range: bytes */1048576") {
		t.Errorf("416: %s", h)
	}
	// Resume with -C: the rest of the file.
	h, b = curl("-C", "1000")
	if !strings.Contains(h, " 206") || !bytes.Equal(b, data[1000:]) {
		t.Errorf("-C 1000: %s, %d bytes", h, len(b))
	}
}
