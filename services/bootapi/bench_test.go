package bootapi_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
)

// BenchmarkConfig measures one /ipxe/v1/config request through the handler (no
// network), for 1,000 registered machines: CPU and allocations per script.
func BenchmarkConfig(b *testing.B) {
	st := storetest.New(b)
	cfg := bootapi.DefaultConfig()
	cfg.Store, cfg.HTTPAddr = st, "127.0.0.1:0"
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := bootapi.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Run(ctx)
	macs := make([]string, 1000)
	for i := range macs {
		macs[i] = fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)
		if _, err := st.Put(ctx, "/bootchain/v1/machines/"+macs[i], &bootapiv1.Machine{Mac: macs[i], Hostname: fmt.Sprintf("n%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	h := srv.Handler()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if rec.Code == 200 {
			break
		}
		time.Sleep(10 * time.Millisecond)
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
