package tftpd_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/tftpd"
)

// artifactstore stops mid-test: transfers go on from the cache; it comes back and a
// new version uploaded then is picked up through the etcd watch.
func TestArtifactstoreRestart(t *testing.T) {
	e := newEnv(t, func(c *tftpd.Config) { c.RefreshWait = 200 * time.Millisecond })
	v1 := randomBytes(t, 300_000)
	e.arts.Put("ipxe.efi", v1)
	mustGet(t, e.addr(), "ipxe.efi", v1)

	e.arts.Stop()
	for i := 0; i < 3; i++ {
		mustGet(t, e.addr(), "ipxe.efi", v1)
	}
	// A change reported while artifactstore is down: the stale copy is still served.
	v2 := randomBytes(t, 310_000)
	e.arts.Put("ipxe.efi", v2)
	testkit.Eventually(t, "the entry to turn stale", func() bool { return cacheEntry(t, e, "ipxe.efi").GetStale() })
	mustGet(t, e.addr(), "ipxe.efi", v1)

	e.arts.Restart()
	testkit.Eventually(t, "the new version", func() bool {
		got, _, err := get(e.addr(), "ipxe.efi", 1468, false)
		return err == nil && bytes.Equal(got, v2)
	})
	// And one more change with artifactstore up.
	v3 := randomBytes(t, 1000)
	e.arts.Put("ipxe.efi", v3)
	testkit.Eventually(t, "the third version", func() bool {
		got, _, err := get(e.addr(), "ipxe.efi", 1468, false)
		return err == nil && bytes.Equal(got, v3)
	})
	if ent := cacheEntry(t, e, "ipxe.efi"); ent.GetStale() || ent.GetSize() != 1000 {
		t.Errorf("entry: %v", ent)
	}
	// Old blobs are gone from disk.
	blobs, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "cache", "blobs"))
	if len(blobs) != 1 {
		t.Errorf("%d blobs on disk, want 1", len(blobs))
	}
}

// A restarted tftpd serves its disk cache while artifactstore is down, verifying
// each blob first; a corrupted blob is refused, never served.
func TestRestartFromDiskCache(t *testing.T) {
	e := newEnv(t)
	efi, kpxe := randomBytes(t, 200_000), randomBytes(t, 50_000)
	e.arts.Put("ipxe.efi", efi)
	e.arts.Put("undionly.kpxe", kpxe)
	mustGet(t, e.addr(), "ipxe.efi", efi)
	mustGet(t, e.addr(), "undionly.kpxe", kpxe)
	e.stop()
	e.arts.Stop()

	// Corrupt one blob on disk (same size, other bytes).
	list := cacheBlob(t, e.cfg.DataDir, kpxe)
	bad := bytes.Clone(kpxe)
	bad[100] ^= 0xff
	if err := os.WriteFile(list, bad, 0o640); err != nil {
		t.Fatal(err)
	}

	e.start()
	mustGet(t, e.addr(), "ipxe.efi", efi)
	if got, _, err := get(e.addr(), "undionly.kpxe", 0, false); err == nil {
		t.Fatalf("corrupted blob served (%d bytes)", len(got))
	}
	if _, err := os.Stat(list); !os.IsNotExist(err) {
		t.Errorf("corrupted blob still on disk: %v", err)
	}
	// With artifactstore back, it is fetched again.
	e.arts.Restart()
	testkit.Eventually(t, "undionly.kpxe again", func() bool {
		got, _, err := get(e.addr(), "undionly.kpxe", 0, false)
		return err == nil && bytes.Equal(got, kpxe)
	})
}

// An artifact deleted upstream stops being served.
func TestArtifactDeleted(t *testing.T) {
	e := newEnv(t)
	e.arts.Put("snponly.efi", []byte("snp"))
	mustGet(t, e.addr(), "snponly.efi", []byte("snp"))
	e.arts.Remove("snponly.efi")
	if err := e.st.Delete(context.Background(), store.Key("artifacts", "snponly.efi"), 0); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the entry to go", func() bool {
		_, _, err := get(e.addr(), "snponly.efi", 0, false)
		return err != nil
	})
}

func mustGet(t *testing.T, addr, file string, want []byte) {
	t.Helper()
	got, _, err := get(addr, file, 1468, true)
	if err != nil {
		t.Fatalf("get %s: %v", file, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get %s: %d bytes, want %d, content differs", file, len(got), len(want))
	}
}

func cacheEntry(t *testing.T, e *env, name string) *tftpdv1.CacheEntry {
	t.Helper()
	resp, err := e.admin.ListCacheEntries(context.Background(), &tftpdv1.ListCacheEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ce := range resp.GetEntries() {
		if ce.GetName() == name {
			return ce
		}
	}
	return nil
}

func cacheBlob(t *testing.T, dataDir string, content []byte) string {
	t.Helper()
	return filepath.Join(dataDir, "cache", "blobs", sha256hex(content))
}
