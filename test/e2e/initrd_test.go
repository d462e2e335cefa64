package e2e

import (
	"compress/gzip"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needInitrdTools skips t unless a kernel, a static busybox and depmod are installed.
func needInitrdTools(t *testing.T) Kernel {
	t.Helper()
	k, err := FindKernel()
	if errors.Is(err, ErrNoKernel) {
		t.Skipf("%v (install linux-image-amd64: scripts/install-deps.sh)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (install busybox-static)")
	}
	if _, err := exec.LookPath("depmod"); err != nil {
		t.Skip("no depmod (install kmod)")
	}
	return k
}

func TestBuildInitrd(t *testing.T) {
	k := needInitrdTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cache := t.TempDir()

	rd, err := BuildInitrd(ctx, InitrdConfig{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if rd.Cached {
		t.Error("first build reported as cached")
	}
	if rd.Kernel != k {
		t.Errorf("kernel = %+v, want %+v", rd.Kernel, k)
	}
	if rd.Size > 4<<20 {
		t.Errorf("initrd is %d bytes; expected about 1.2 MB", rd.Size)
	}
	t.Logf("initrd %s: %d bytes, kernel %s", rd.Path, rd.Size, rd.Kernel.Version)

	f, err := os.Open(rd.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(zr)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpioEntry{}
	for _, e := range entries {
		byName[e.Name] = e
	}
	for _, name := range []string{"init", "bin/busybox", "lib/bootchain.sh", "etc/udhcpc.script", "etc/bootchain-modules"} {
		e, ok := byName[name]
		if !ok || e.Mode&0o170000 != cpioModeRegular || len(e.Data) == 0 {
			t.Errorf("%s missing or empty", name)
		}
	}
	if e := byName["init"]; e.Mode&0o111 == 0 {
		t.Errorf("init not executable: %o", e.Mode)
	}
	if e := byName["dev/console"]; e.Mode&0o170000 != cpioModeChar || e.Major != 5 || e.Minor != 1 {
		t.Errorf("dev/console = %+v, want char 5,1", e)
	}

	// Modules: every one packed, uncompressed, in the order of the module list.
	order := strings.Fields(string(byName["etc/bootchain-modules"].Data))
	wantNames := append(append([]string{}, VirtioNetModules...), E1000Modules...)
	if len(order) != len(wantNames) {
		t.Fatalf("module list %v, want %d modules", order, len(wantNames))
	}
	for i, rel := range order {
		if got := strings.TrimSuffix(filepath.Base(rel), ".ko"); strings.ReplaceAll(got, "-", "_") != wantNames[i] {
			t.Errorf("module %d = %s, want %s", i, rel, wantNames[i])
		}
		e, ok := byName["lib/modules/"+k.Version+"/"+rel]
		if !ok {
			t.Errorf("module file %s not packed", rel)
			continue
		}
		if !strings.HasPrefix(string(e.Data), "\x7fELF") {
			t.Errorf("module %s is not an uncompressed ELF file", rel)
		}
	}
	dep := string(byName["lib/modules/"+k.Version+"/modules.dep"].Data)
	if !strings.Contains(dep, "virtio_net.ko:") {
		t.Errorf("modules.dep lacks virtio_net:\n%s", dep)
	}

	// The scripts are valid shell for busybox.
	for _, name := range []string{"init", "lib/bootchain.sh", "etc/udhcpc.script"} {
		cmd := exec.CommandContext(ctx, "/bin/busybox", "sh", "-n")
		cmd.Stdin = strings.NewReader(string(byName[name].Data))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: busybox sh -n: %v: %s", name, err, out)
		}
	}

	// Second build: from the cache, same file.
	start := time.Now()
	again, err := BuildInitrd(ctx, InitrdConfig{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached || again.Path != rd.Path || again.SHA256 != rd.SHA256 {
		t.Errorf("second build: cached=%v path=%s sha=%s; want cached %s %s", again.Cached, again.Path, again.SHA256, rd.Path, rd.SHA256)
	}
	t.Logf("cached build took %v", time.Since(start))

	// Reproducible: a fresh build elsewhere gives the same bytes.
	other, err := BuildInitrd(ctx, InitrdConfig{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if other.Cached || other.SHA256 != rd.SHA256 {
		t.Errorf("rebuild: cached=%v sha=%s, want a fresh build with sha %s", other.Cached, other.SHA256, rd.SHA256)
	}

	// A different module list is a different initrd.
	virtioOnly, err := BuildInitrd(ctx, InitrdConfig{CacheDir: cache, Modules: VirtioNetModules})
	if err != nil {
		t.Fatal(err)
	}
	if virtioOnly.Cached || virtioOnly.Path == rd.Path {
		t.Errorf("virtio-only build reused %s", virtioOnly.Path)
	}
}

func TestBuildInitrdErrors(t *testing.T) {
	k := needInitrdTools(t)
	ctx := context.Background()
	tests := map[string]struct {
		cfg  InitrdConfig
		want string
	}{
		"unknown module":  {InitrdConfig{Kernel: k, Modules: []string{"no_such_module"}, CacheDir: t.TempDir()}, "not found"},
		"wrong order":     {InitrdConfig{Kernel: k, Modules: []string{"virtio_net", "virtio_ring", "virtio", "failover", "net_failover"}, CacheDir: t.TempDir()}, "listed after"},
		"missing dep":     {InitrdConfig{Kernel: k, Modules: []string{"virtio_net"}, CacheDir: t.TempDir()}, "not in the module list"},
		"dynamic busybox": {InitrdConfig{Kernel: k, Busybox: "/bin/ls", CacheDir: t.TempDir()}, "dynamically linked"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := BuildInitrd(ctx, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("BuildInitrd() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestCheckLoadOrder(t *testing.T) {
	dep := "kernel/a.ko:\nkernel/b.ko.xz: kernel/a.ko.xz\nkernel/c.ko: kernel/b.ko kernel/a.ko\n"
	mod := func(rel string) module { return module{name: filepath.Base(rel), rel: rel} }
	tests := map[string]struct {
		mods    []module
		wantErr string
	}{
		"ok":            {[]module{mod("kernel/a.ko"), mod("kernel/b.ko"), mod("kernel/c.ko")}, ""},
		"dep after":     {[]module{mod("kernel/b.ko"), mod("kernel/a.ko")}, "listed after"},
		"dep missing":   {[]module{mod("kernel/a.ko"), mod("kernel/c.ko")}, "not in the module list"},
		"unknown entry": {[]module{mod("kernel/z.ko")}, "missing from"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := checkLoadOrder(tc.mods, dep)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("checkLoadOrder() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9-amd64", "6.1.0-56-amd64", true},
		{"6.1.0-56-amd64", "6.1.0-9-amd64", false},
		{"5.10.0-30-amd64", "6.1.0-1-amd64", true},
		{"6.1.0-56-amd64", "6.1.0-56-amd64", false},
	}
	for _, tc := range tests {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
