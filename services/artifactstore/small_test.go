package artifactstore_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
)

// TestSmallFileFromMemory: a small artifact is read from disk once and then
// served from memory, each answer in one write, with the same bytes and
// headers; pipelined requests on one connection get their answers in order;
// HEAD and 304 still carry no body; a replaced artifact serves its new bytes.
func TestSmallFileFromMemory(t *testing.T) {
	in, lis := startSpied(t)
	data := randBytes(t, 4096)
	a := mustUpload(t, in, "boot/menu", data)

	c, err := net.Dial("tcp", in.srv.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(method string, hdr string) (*http.Response, []byte) {
		t.Helper()
		fmt.Fprintf(c, "%s /artifacts/boot/menu HTTP/1.1\r\nHost: x\r\n%s\r\n", method, hdr)
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	first, b := get("GET", "") // from disk: it is verified and remembered
	if first.StatusCode != 200 || !bytes.Equal(b, data) {
		t.Fatalf("first GET: %d, %d bytes", first.StatusCode, len(b))
	}
	for i := range 3 {
		before := lis.writes.Load()
		resp, b := get("GET", "")
		if n := lis.writes.Load() - before; n != 1 {
			t.Errorf("GET %d from memory: %d writes, want 1", i, n)
		}
		if resp.StatusCode != 200 || !bytes.Equal(b, data) {
			t.Fatalf("GET %d from memory: %d, %d bytes", i, resp.StatusCode, len(b))
		}
		for _, h := range []string{"Etag", "Last-Modified", "Content-Length", "Content-Type", "Accept-Ranges"} {
			if resp.Header.Get(h) != first.Header.Get(h) {
				t.Errorf("%s from memory %q, from disk %q", h, resp.Header.Get(h), first.Header.Get(h))
			}
		}
	}
	if resp, b := get("GET", "Range: bytes=100-199\r\n"); resp.StatusCode != 206 || !bytes.Equal(b, data[100:200]) {
		t.Errorf("range from memory: %d, %d bytes", resp.StatusCode, len(b))
	}
	if resp, b := get("HEAD", ""); resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != 4096 {
		t.Errorf("HEAD: %d, %d bytes, length %d", resp.StatusCode, len(b), resp.ContentLength)
	}
	if resp, b := get("GET", "If-None-Match: \""+a.GetSha256()+"\"\r\n"); resp.StatusCode != 304 || len(b) != 0 {
		t.Errorf("If-None-Match: %d, %d bytes", resp.StatusCode, len(b))
	}

	// Pipelined: three requests in one write, three answers in order.
	req := "GET /artifacts/boot/menu HTTP/1.1\r\nHost: x\r\n\r\n"
	rng := "GET /artifacts/boot/menu HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n"
	if _, err := io.WriteString(c, req+rng+req); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{data, data[:10], data} {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("pipelined %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("pipelined %d: %d, %d bytes (%v), want %d", i, resp.StatusCode, len(b), err, len(want))
		}
	}

	// Replaced: the name's new content, not the remembered one.
	newData := randBytes(t, 4096)
	if _, err := upload(context.Background(), in.cli, &artifactv1.UploadHeader{Name: "boot/menu", ReplacesSha256: a.GetSha256()}, newData); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the replaced content served", func() bool {
		resp, b := get("GET", "")
		return resp.StatusCode == 200 && bytes.Equal(b, newData)
	})
}
