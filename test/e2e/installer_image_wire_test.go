//go:build linux

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testDiskImage is a 3 MiB disk like the installer image's: an MBR with a data
// partition at 1 MiB and the seed partition (type 0xda) at 2 MiB, zeros.
func testDiskImage(t *testing.T) []byte {
	t.Helper()
	raw := make([]byte, 3<<20)
	if _, err := rand.Read(raw[512 : 2<<20]); err != nil {
		t.Fatal(err)
	}
	part := func(i int, typ byte, lba, n uint32) {
		e := raw[446+16*i:]
		e[4] = typ
		binary.LittleEndian.PutUint32(e[8:], lba)
		binary.LittleEndian.PutUint32(e[12:], n)
	}
	part(0, 0x83, 2048, 2048)
	part(1, 0xda, 4096, 2048)
	raw[510], raw[511] = 0x55, 0xaa
	return raw
}

// TestInstallImageWire runs the initramfs's image installer (install_image in
// initramfs/bootchain.sh) with the host's busybox, a file as the disk, an
// image served on loopback and a CallbackServer: the same code as in the VM.
// The image is written as it downloads and verified; the seed lands in the
// seed partition; the reports say how far it got. A download whose SHA-256
// is not the expected one leaves a wiped disk start and a failure.
func TestInstallImageWire(t *testing.T) {
	lib, bin := hostInitramfs(t, "wget", "timeout", "cat", "sleep", "sed", "rm", "date", "tail",
		"mkfifo", "sha256sum", "tee", "gunzip", "dd", "od", "sync", "touch", "blockdev")
	raw := testDiskImage(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	sum := sha256.Sum256(gz.Bytes())

	var mu sync.Mutex
	var queries []string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		_, _ = w.Write(gz.Bytes())
	})}
	go srv.Serve(ln)
	defer srv.Close()
	cbln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cb := ServeCallbacks(cbln)
	defer cb.Close()

	const (
		tp   = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		seed = "http://198.18.0.1/installer/v1/job-7/k3y/"
	)
	imageURL := "http://" + ln.Addr().String() + "/artifacts/installer-image/disk.img.gz"
	tests := map[string]struct {
		sha256  string
		wantOK  bool
		reports []string
	}{
		"verified": {sha256: hex.EncodeToString(sum[:]), wantOK: true,
			reports: []string{"running 10 writing image to vda", "running 85 image written: 3 MiB, sha256 ok", "running 90 image installed, rebooting into it"}},
		"corrupt": {sha256: strings.Repeat("ab", 32), reports: []string{"running 10 writing image to vda"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := len(cb.Reports())
			disk := filepath.Join(t.TempDir(), "disk")
			if err := os.WriteFile(disk, bytes.Repeat([]byte{0xee}, 4<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			cmdline := filepath.Join(t.TempDir(), "cmdline")
			line := "console=ttyS0 bootchain.callback=" + cb.URL("job-7") + " bootchain.token=boot bootchain.job=job-7 bootchain.traceparent=" + tp +
				" bootchain.image=" + imageURL + " bootchain.image.sha256=" + tc.sha256 + " bootchain.image.size=3145728 bootchain.seed=" + seed
			if err := os.WriteFile(cmdline, []byte(line+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			script := `. "$1"; bootchain_cmdline "$2"; DEVICE=$3; install_image`
			cmd := exec.CommandContext(ctx, "/bin/busybox", "sh", "-c", script, "sh", lib, cmdline, disk)
			cmd.Env = []string{"PATH=" + bin}
			out, err := cmd.CombinedOutput()
			if (err == nil) != tc.wantOK {
				t.Fatalf("install_image: %v, want ok %v\n%s", err, tc.wantOK, out)
			}
			var got []string
			for _, r := range cb.Reports()[before:] {
				// Progress while writing comes every 5 s: a slow machine may
				// send one; it is checked, not counted.
				if m := r.Form.Get("message"); strings.HasPrefix(m, "writing image: ") {
					if r.State() != "running" || !strings.HasSuffix(m, " MiB") {
						t.Errorf("progress report %v", r.Form)
					}
					continue
				}
				got = append(got, r.State()+" "+r.Form.Get("progress")+" "+r.Form.Get("message"))
			}
			if strings.Join(got, "\n") != strings.Join(tc.reports, "\n") {
				t.Errorf("reports:\n%s\nwant:\n%s\noutput:\n%s", strings.Join(got, "\n"), strings.Join(tc.reports, "\n"), out)
			}
			written, err := os.ReadFile(disk)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.wantOK {
				if !bytes.Equal(written[:1<<20], make([]byte, 1<<20)) {
					t.Errorf("a corrupt image left the disk's first MiB unwiped\n%s", out)
				}
				return
			}
			at := 4096 * 512
			if !bytes.Equal(written[:at], raw[:at]) || !bytes.Equal(written[at+512:len(raw)], raw[at+512:]) {
				t.Errorf("the disk is not the image outside the seed sector\n%s", out)
			}
			wantSeed := "BOOTCHAIN-SEED/1\nseedfrom " + seed + "\ntoken " + cb.Issued("job-7") + "\ncallback " + cb.URL("job-7") + "\njob job-7\n"
			if s := string(bytes.TrimRight(written[at:at+512], "\x00")); s != wantSeed {
				t.Errorf("seed sector %q, want %q", s, wantSeed)
			}
			mu.Lock()
			q := queries[len(queries)-1]
			mu.Unlock()
			if !strings.Contains(q, "traceparent=") {
				t.Errorf("image download without the traceparent: %q", q)
			}
		})
	}
}

// TestSeedService runs the installed system's side of the seed
// (scripts/installer-image/bootchain-seed, run by bootchain-seed.service before
// cloud-init) on a tree of files: it finds the partition the installer wrote,
// writes NoCloud's seedfrom and the callback token (0600), and wipes the seed,
// so a second boot finds none; a seed whose URL is not a plain http(s) URL is
// refused.
func TestSeedService(t *testing.T) {
	script, err := filepath.Abs("../../scripts/installer-image/bootchain-seed")
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://198.18.0.1:8080/installer/v1/job-7/k3y/"
	run := func(t *testing.T, root string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/bin/sh", script)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "BOOTCHAIN_SEED_ROOT=" + root}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	tree := func(t *testing.T, seed string) (root, part string) {
		root = t.TempDir()
		for _, d := range []string{"sys/class/block/vda", "sys/class/block/vda1", "sys/class/block/vda2", "dev"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []string{"vda1", "vda2"} {
			if err := os.WriteFile(filepath.Join(root, "sys/class/block", p, "partition"), []byte("1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(root, "dev/vda1"), bytes.Repeat([]byte{0xee}, 8192), 0o600); err != nil {
			t.Fatal(err)
		}
		part = filepath.Join(root, "dev/vda2")
		if err := os.WriteFile(part, append([]byte(seed), make([]byte, 1<<20-len(seed))...), 0o600); err != nil {
			t.Fatal(err)
		}
		return root, part
	}
	t.Run("seed", func(t *testing.T) {
		root, part := tree(t, "BOOTCHAIN-SEED/1\nseedfrom "+url+"\ntoken 0123abcd\ncallback https://198.18.0.1:8443/ipxe/v1/report?job=job-7\njob job-7\n")
		out, err := run(t, root)
		if err != nil || !strings.Contains(out, "bootchain-seed: /dev/vda2 read: NoCloud from "+url) {
			t.Fatalf("bootchain-seed: %v\n%s", err, out)
		}
		cfg, err := os.ReadFile(filepath.Join(root, "etc/cloud/cloud.cfg.d/95-bootchain-seed.cfg"))
		if err != nil || string(cfg) != "datasource:\n  NoCloud:\n    seedfrom: "+url+"\n" {
			t.Errorf("cloud.cfg.d: %v %q", err, cfg)
		}
		for name, want := range map[string]string{"token": "0123abcd\n", "callback": "https://198.18.0.1:8443/ipxe/v1/report?job=job-7\n", "job": "job-7\n"} {
			p := filepath.Join(root, "var/lib/bootchain", name)
			got, err := os.ReadFile(p)
			if err != nil || string(got) != want {
				t.Errorf("%s: %v %q, want %q", name, err, got, want)
			}
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v (%v), want 0600", name, fi.Mode().Perm(), err)
			}
		}
		b, err := os.ReadFile(part)
		if err != nil || len(b) != 1<<20 || !bytes.Equal(b[:4096], make([]byte, 4096)) {
			t.Errorf("the seed was not wiped in place (%v, %d bytes)", err, len(b))
		}
		if out, err := run(t, root); err != nil || !strings.Contains(out, "no seed partition") {
			t.Errorf("second boot: %v\n%s", err, out)
		}
	})
	t.Run("not a plain URL", func(t *testing.T) {
		root, _ := tree(t, "BOOTCHAIN-SEED/1\nseedfrom http://h/x#a:b\ntoken t\n")
		out, err := run(t, root)
		if err == nil || !strings.Contains(out, "no seedfrom URL") {
			t.Errorf("bootchain-seed: %v, want a refusal\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(root, "var/lib/bootchain/token")); err == nil {
			t.Error("a refused seed left a token")
		}
	})
}
