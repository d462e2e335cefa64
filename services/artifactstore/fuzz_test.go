package artifactstore_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// FuzzHTTP sends arbitrary request lines and Range, If-Range, If-None-Match
// and If-Modified-Since headers, as raw bytes on a TCP connection, to a real
// artifactstore (embedded etcd) holding one artifact in memory and one on disk:
// fasthttp's request parser, the path decoding, the conditional headers and
// the Range parser together. Every request is answered; never with a 5xx; a
// 200 or 206 carries exactly the artifact's bytes that its headers say, and
// nothing but the two artifacts is ever served.
func FuzzHTTP(f *testing.F) {
	in := start(f, storetest.Start(f), opts{})
	small := randBytes(f, 4096)
	big := randBytes(f, 200<<10) // past the in-memory size: from the file
	a := mustUpload(f, in, "boot/menu", small)
	k := mustUpload(f, in, "boot/kernel", big)
	addr := in.srv.HTTPAddr().String()
	etag, bigTag := `"`+a.GetSha256()+`"`, `"`+k.GetSha256()+`"`

	f.Add("GET", "/artifacts/boot/menu", "bytes=0-99", "", "", "")
	f.Add("GET", "/artifacts/boot/kernel", "bytes=0-9, 100-199,-5", etag, "", "")
	f.Add("HEAD", "/artifacts/boot/%6benel", "bytes=5-1", "", "*", "")
	f.Add("GET", "/artifacts/boot/../boot/menu?sha256=00", "bytes=-0", "W/"+etag, `"x", W/`+etag, "Mon, 02 Jan 2006 15:04:05 GMT")
	f.Add("POST", "/artifacts/%2e%2e/etc/passwd?traceparent=00-x", "lines=1-2", "garbage", "", "yesterday")
	f.Add("GET", "http://x/artifacts/boot/menu", "bytes=0-0,0-0,0-4095", "", "", "")
	f.Fuzz(func(t *testing.T, method, target, rng, ifRange, inm, ims string) {
		for _, s := range []string{method, target, rng, ifRange, inm, ims} {
			if strings.ContainsAny(s, "\r\n") || len(s) > 2048 {
				t.Skip("one request line and one line per header")
			}
		}
		var req bytes.Buffer
		fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", method, target)
		for _, h := range [][2]string{{"Range", rng}, {"If-Range", ifRange}, {"If-None-Match", inm}, {"If-Modified-Since", ims}} {
			if h[1] != "" {
				fmt.Fprintf(&req, "%s: %s\r\n", h[0], h[1])
			}
		}
		req.WriteString("\r\n")
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(req.Bytes()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%q: no answer: %v", req.String(), err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%q: body: %v", req.String(), err)
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("%q: %d %s", req.String(), resp.StatusCode, body)
		}
		if resp.StatusCode != 200 && resp.StatusCode != 206 || method == "HEAD" {
			return
		}
		var data []byte
		switch resp.Header.Get("Etag") {
		case etag:
			data = small
		case bigTag:
			data = big
		default:
			// Not an artifact (/healthz, /metrics): what the other routes
			// answer is their own tests' business; here: not a 5xx, and no
			// artifact's bytes without its ETag.
			if bytes.Equal(body, small) || bytes.Equal(body, big) {
				t.Fatalf("%q: %d with an artifact's bytes but no ETag", req.String(), resp.StatusCode)
			}
			return
		}
		if resp.StatusCode == 200 {
			if !bytes.Equal(body, data) {
				t.Fatalf("%q: 200 with %d bytes, not the artifact's %d", req.String(), len(body), len(data))
			}
			return
		}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/") {
			return // parts checked by TestHTTPRangeSemantics; here: answered, not 5xx
		}
		var start, end, size int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &start, &end, &size); err != nil || size != int64(len(data)) {
			t.Fatalf("%q: Content-Range %q", req.String(), resp.Header.Get("Content-Range"))
		}
		if !bytes.Equal(body, data[start:end+1]) || resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Fatalf("%q: 206 body is not bytes %d-%d", req.String(), start, end)
		}
	})
}
