package bootapi_test

import (
	"context"
	"fmt"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/valyala/fasthttp"
)

// BenchmarkConfig measures one /ipxe/v1/config request through the handler (no
// network), for 1,000 registered machines: CPU and allocations per script.
func BenchmarkConfig(b *testing.B) {
	h, st := startHandler(b)
	ctx := context.Background()
	macs := make([]string, 1000)
	uris := make([]string, len(macs))
	for i := range macs {
		macs[i] = fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)
		uris[i] = "/ipxe/v1/config?mac=" + macs[i] + "&arch=x86_64&platform=pcbios"
		if _, err := st.Put(ctx, "/bootchain/v1/machines/"+macs[i], &bootapiv1.Machine{Mac: macs[i], Hostname: fmt.Sprintf("n%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	// One RequestCtx for every request, reset in between, as fasthttp's server
	// does on a keep-alive connection. (It also formats the client's IP once per
	// connection; here that happens per request.)
	var rc fasthttp.RequestCtx
	rc.Init(&fasthttp.Request{}, client, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rc.Request.SetRequestURI(uris[i%len(uris)])
		rc.Response.Reset()
		h(&rc)
		if rc.Response.StatusCode() != 200 {
			b.Fatal(rc.Response.StatusCode())
		}
	}
}
