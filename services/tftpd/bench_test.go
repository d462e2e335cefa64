package tftpd_test

import (
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/services/tftpd"
)

// BenchmarkDownload200 is 200 concurrent downloads of a 1 MB file at blksize 1468
// over loopback (pin/tftp client in the same process). tools/bench/tftpd compares
// against other servers.
func BenchmarkDownload200(b *testing.B) {
	e := newEnv(b, func(c *tftpd.Config) { c.MaxPerClient = 0; c.MaxTransfers = 1024; c.Timeout = time.Second })
	content := randomBytes(b, 1<<20)
	e.arts.Put("ipxe.efi", content)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for j := 0; j < 200; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := get(e.addr(), "ipxe.efi", 1468, true); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
}
