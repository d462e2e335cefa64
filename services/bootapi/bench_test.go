package bootapi_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// BenchmarkConfig measures one /ipxe/v1/config request through the handler (no
// network), for 1,000 registered machines: CPU and allocations per script.
func BenchmarkConfig(b *testing.B) {
	h, st := startHandler(b)
	ctx := context.Background()
	macs := make([]string, 1000)
	for i := range macs {
		macs[i] = fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)
		if _, err := st.Put(ctx, "/bootchain/v1/machines/"+macs[i], &bootapiv1.Machine{Mac: macs[i], Hostname: fmt.Sprintf("n%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ipxe/v1/config?mac="+macs[i%len(macs)]+"&arch=x86_64&platform=pcbios", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
