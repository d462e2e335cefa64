package bootapi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A profile whose cmdline template could spin bootapi is refused when written,
// naming the field, and nothing is stored.
func TestLoopingCmdlineRefused(t *testing.T) {
	h := start(t, storetest.New(t))
	ctx := context.Background()
	kernel := &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "k"}}
	for _, tmpl := range []string{
		`{{range $i := 1000000000000}}{{end}}`,
		`{{define "a"}}{{template "a" .}}{{template "a" .}}{{end}}{{template "a" .}}`,
		`{{printf "%999999999d" 1}}`,
	} {
		_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "loop", Kernel: kernel, Cmdline: tmpl}})
		if status.Code(err) != codes.InvalidArgument || apierr.FieldOf(err) != "profile.cmdline" {
			t.Fatalf("%s: %v, want InvalidArgument on profile.cmdline", tmpl, err)
		}
	}
	if _, err := h.profiles.GetProfile(ctx, &bootapiv1.GetProfileRequest{Name: "loop"}); status.Code(err) != codes.NotFound {
		t.Fatalf("refused profile stored: %v", err)
	}
}

// An HTTP flood from one IP is answered 429 with Retry-After past its burst and
// counted; another IP is still served.
func TestHTTPFloodFromOneIP(t *testing.T) {
	h := start(t, storetest.New(t), func(c *bootapi.Config) { c.HTTPLimitPerIP = ratelimit.Limit{Rate: 1e-6, Burst: 20} })
	get := func(ip string) (int, string) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
		resp, err := c.Get(h.base + "/boot.ipxe")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	limited := 0
	for i := 0; i < 50; i++ {
		code, retry := get("127.0.0.1")
		if code == http.StatusTooManyRequests {
			limited++
			if retry == "" {
				t.Fatal("429 without Retry-After")
			}
		}
	}
	// start's readiness probe took one token or more from 127.0.0.1.
	if limited < 30 || uint64(limited) != h.srv.HTTPLimited() {
		t.Fatalf("%d answers 429, %d counted; want 30 or more, all counted", limited, h.srv.HTTPLimited())
	}
	if code, _ := get("127.0.0.2"); code != http.StatusOK {
		t.Fatalf("another IP during the flood: %d", code)
	}
}
