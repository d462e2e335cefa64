package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Files of the initramfs; see initramfs/.
var (
	//go:embed initramfs/init
	initScript []byte
	//go:embed initramfs/bootchain.sh
	bootchainLib []byte
	//go:embed initramfs/udhcpc.script
	udhcpcScript []byte
)

// initrdFormat changes whenever the builder's output changes for equal inputs, so
// cached initrds of older builders are not reused.
const initrdFormat = "bootchain-e2e-initrd/1"

// VirtioNetModules are the modules virtio-net needs in Debian's kernel, in load order.
var VirtioNetModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
	"virtio_pci", "failover", "net_failover", "virtio_net",
}

// E1000Modules are the modules for QEMU's e1000 NIC, in load order.
var E1000Modules = []string{"e1000"}

// ErrNoKernel is returned when no kernel with modules is installed (Debian package
// linux-image-amd64, see scripts/install-deps.sh).
var ErrNoKernel = errors.New("e2e: no kernel found")

// Kernel is an installed Linux kernel and its modules.
type Kernel struct {
	// Version is the release, e.g. "6.1.0-56-amd64".
	Version string
	// Image is the bootable image, e.g. /boot/vmlinuz-6.1.0-56-amd64.
	Image string
	// ModulesDir is /lib/modules/<Version>.
	ModulesDir string
}

// FindKernel returns the newest kernel that has both /boot/vmlinuz-<v> and
// /lib/modules/<v>. $BOOTCHAIN_E2E_KERNEL, if set, names the version to use.
func FindKernel() (Kernel, error) {
	if v := os.Getenv("BOOTCHAIN_E2E_KERNEL"); v != "" {
		return kernelVersion("/", v)
	}
	return findKernel("/")
}

func findKernel(root string) (Kernel, error) {
	images, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil {
		return Kernel{}, err
	}
	var found []Kernel
	for _, img := range images {
		k, err := kernelVersion(root, strings.TrimPrefix(filepath.Base(img), "vmlinuz-"))
		if err == nil {
			found = append(found, k)
		}
	}
	if len(found) == 0 {
		return Kernel{}, fmt.Errorf("%w: no %s/boot/vmlinuz-* with matching lib/modules", ErrNoKernel, root)
	}
	sort.Slice(found, func(i, j int) bool { return versionLess(found[i].Version, found[j].Version) })
	return found[len(found)-1], nil
}

func kernelVersion(root, v string) (Kernel, error) {
	k := Kernel{
		Version:    v,
		Image:      filepath.Join(root, "boot", "vmlinuz-"+v),
		ModulesDir: filepath.Join(root, "lib", "modules", v),
	}
	for _, p := range []string{k.Image, k.ModulesDir} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, fmt.Errorf("%w: %v", ErrNoKernel, err)
		}
	}
	return k, nil
}

// versionLess compares kernel versions piecewise, numbers numerically.
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '~' })
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		var na, nb int
		_, ea := fmt.Sscanf(pa[i], "%d", &na)
		_, eb := fmt.Sscanf(pb[i], "%d", &nb)
		if ea == nil && eb == nil && na != nb {
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

// InitrdConfig says what goes into the initramfs. The zero value builds the default:
// newest installed kernel, /bin/busybox, virtio-net and e1000 modules.
type InitrdConfig struct {
	// Kernel whose modules are packed; default FindKernel().
	Kernel Kernel
	// Busybox is a statically linked busybox; default /bin/busybox (Debian package
	// busybox-static).
	Busybox string
	// Modules to pack and load, by name, in load order; default VirtioNetModules
	// followed by E1000Modules.
	Modules []string
	// CacheDir holds built initrds by content; default $BOOTCHAIN_E2E_CACHE, else
	// <user cache dir>/bootchain/e2e.
	CacheDir string
}

// Initrd is a built initramfs.
type Initrd struct {
	// Path is the gzip-compressed newc cpio archive.
	Path string
	// Kernel is the kernel the modules belong to; boot Kernel.Image with it.
	Kernel Kernel
	// SHA256 is the hex digest of the file at Path.
	SHA256 string
	// Size is the file's size in bytes.
	Size int64
	// Modules are the module files packed, relative to /lib/modules/<version>, in
	// load order.
	Modules []string
	// Cached reports that the file was already in the cache.
	Cached bool
}

// BuildInitrd builds (or finds in the cache) the e2e initramfs: busybox, the kernel
// modules for the NICs, and an /init that configures the NIC by DHCP, reports
// "running" then "succeeded" to the bootchain.callback= URL and powers off. A build's
// cache key covers every input, so a second call with the same inputs costs only the
// hashing of busybox and the modules.
func BuildInitrd(ctx context.Context, cfg InitrdConfig) (*Initrd, error) {
	var err error
	if cfg.Kernel.Version == "" {
		if cfg.Kernel, err = FindKernel(); err != nil {
			return nil, err
		}
	}
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	if cfg.Modules == nil {
		cfg.Modules = append(append([]string{}, VirtioNetModules...), E1000Modules...)
	}
	if cfg.CacheDir == "" {
		if cfg.CacheDir, err = defaultCacheDir(); err != nil {
			return nil, err
		}
	}

	busybox, err := os.ReadFile(cfg.Busybox)
	if err != nil {
		return nil, fmt.Errorf("e2e: busybox: %w", err)
	}
	if err := checkStatic(cfg.Busybox); err != nil {
		return nil, err
	}
	mods, err := findModules(cfg.Kernel.ModulesDir, cfg.Modules)
	if err != nil {
		return nil, err
	}

	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", initrdFormat, cfg.Kernel.Version)
	for _, b := range [][]byte{initScript, bootchainLib, udhcpcScript, busybox} {
		fmt.Fprintf(h, "%d\x00", len(b))
		h.Write(b)
	}
	for _, m := range mods {
		sum, err := fileSHA256(m.src)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(h, "%s\x00%s\x00", m.rel, sum)
	}
	key := hex.EncodeToString(h.Sum(nil))[:32]
	out := filepath.Join(cfg.CacheDir, "initrd-"+cfg.Kernel.Version+"-"+key+".cpio.gz")

	rd := &Initrd{Path: out, Kernel: cfg.Kernel}
	for _, m := range mods {
		rd.Modules = append(rd.Modules, m.rel)
	}
	if _, err := os.Stat(out); err == nil {
		rd.Cached = true
		return rd, rd.stat()
	}

	archive, err := buildArchive(ctx, cfg.Kernel, busybox, mods)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("e2e: initrd cache: %w", err)
	}
	tmp, err := os.CreateTemp(cfg.CacheDir, ".initrd-*")
	if err != nil {
		return nil, fmt.Errorf("e2e: initrd cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(archive); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("e2e: write initrd: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("e2e: write initrd: %w", err)
	}
	// Rename is atomic: concurrent builders of the same key write the same bytes.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return nil, fmt.Errorf("e2e: write initrd: %w", err)
	}
	return rd, rd.stat()
}

func (rd *Initrd) stat() error {
	sum, err := fileSHA256(rd.Path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(rd.Path)
	if err != nil {
		return err
	}
	rd.SHA256, rd.Size = sum, fi.Size()
	return nil
}

func defaultCacheDir() (string, error) {
	if d := os.Getenv("BOOTCHAIN_E2E_CACHE"); d != "" {
		return d, nil
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "bootchain", "e2e"), nil
	}
	return filepath.Join(os.TempDir(), "bootchain-e2e-cache"), nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("e2e: hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkStatic fails for a dynamically linked binary, which could not run in an
// initramfs without its libraries.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("e2e: busybox %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("e2e: %s is dynamically linked; install busybox-static", p)
		}
	}
	return nil
}

// module is a kernel module file found for a module name.
type module struct {
	name string // as given, e.g. "virtio_net"
	src  string // file on disk, possibly compressed
	rel  string // path in the initrd under lib/modules/<v>, uncompressed (.ko)
}

// moduleExts are the module file suffixes Debian kernels use; compressed ones are
// unpacked at build time, so busybox insmod never needs to read xz or zstd.
var moduleExts = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func findModules(dir string, names []string) ([]module, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[strings.ReplaceAll(n, "-", "_")] = true
	}
	found := map[string]module{}
	root := filepath.Join(dir, "kernel")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := d.Name()
		for _, ext := range moduleExts {
			if !strings.HasSuffix(base, ext) {
				continue
			}
			name := strings.ReplaceAll(strings.TrimSuffix(base, ext), "-", "_")
			if want[name] {
				rel, _ := filepath.Rel(dir, p)
				rel = strings.TrimSuffix(filepath.ToSlash(rel), ext) + ".ko"
				found[name] = module{src: p, rel: rel}
			}
			break
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2e: scan modules in %s: %w", root, err)
	}
	mods := make([]module, 0, len(names))
	for _, n := range names {
		m, ok := found[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("e2e: module %s not found under %s (built into the kernel?)", n, root)
		}
		m.name = n
		mods = append(mods, m)
	}
	return mods, nil
}

// readModule returns a module's uncompressed bytes.
func readModule(ctx context.Context, p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".ko"):
		return os.ReadFile(p)
	case strings.HasSuffix(p, ".ko.gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("e2e: %s: %w", p, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(p, ".ko.xz"):
		return runOutput(ctx, "xz", "-dc", p)
	case strings.HasSuffix(p, ".ko.zst"):
		return runOutput(ctx, "zstd", "-dcq", p)
	}
	return nil, fmt.Errorf("e2e: unknown module format %s", p)
}

func runOutput(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("e2e: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// buildArchive lays the modules out in a scratch root, runs depmod there (Debian's
// kernel package may lack modules.dep, and the initrd should carry its own), checks
// that the load order satisfies every dependency, and packs everything into a
// gzip-compressed cpio archive.
func buildArchive(ctx context.Context, k Kernel, busybox []byte, mods []module) ([]byte, error) {
	kver := k.Version
	scratch, err := os.MkdirTemp("", "bootchain-initrd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)

	modRoot := filepath.Join(scratch, "lib", "modules", kver)
	data := map[string][]byte{}
	for _, m := range mods {
		b, err := readModule(ctx, m.src)
		if err != nil {
			return nil, err
		}
		data[m.rel] = b
		dst := filepath.Join(modRoot, filepath.FromSlash(m.rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return nil, err
		}
	}
	if _, err := runOutput(ctx, "depmod", "-b", scratch, kver); err != nil {
		return nil, fmt.Errorf("%w (depmod is in Debian package kmod)", err)
	}
	depText, err := os.ReadFile(filepath.Join(modRoot, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("e2e: depmod wrote no modules.dep: %w", err)
	}
	if err := checkLoadOrder(mods, string(depText)); err != nil {
		return nil, err
	}
	// The scratch depmod sees only the packed modules, so it cannot name a missing
	// dependency; the kernel's own modules.dep (if there is one) can.
	if sys, err := os.ReadFile(filepath.Join(k.ModulesDir, "modules.dep")); err == nil {
		if err := checkLoadOrder(mods, string(sys)); err != nil {
			return nil, fmt.Errorf("%w (per %s/modules.dep)", err, k.ModulesDir)
		}
	}
	aliasText, _ := os.ReadFile(filepath.Join(modRoot, "modules.alias"))

	var order strings.Builder
	for _, m := range mods {
		order.WriteString(m.rel + "\n")
	}

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	cw := newCPIOWriter(zw)
	for _, d := range []string{"bin", "dev", "etc", "lib", "proc", "root", "run", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin"} {
		cw.Dir(d, 0o755)
	}
	cw.CharDev("dev/console", 0o600, 5, 1)
	cw.File("bin/busybox", 0o755, busybox)
	cw.Symlink("bin/sh", "busybox")
	cw.File("init", 0o755, initScript)
	cw.File("lib/bootchain.sh", 0o644, bootchainLib)
	cw.File("etc/udhcpc.script", 0o755, udhcpcScript)
	cw.File("etc/bootchain-modules", 0o644, []byte(order.String()))

	// Module directories, each once, parents first.
	dirs := map[string]bool{}
	var addDir func(string)
	addDir = func(d string) {
		if d == "." || d == "lib" || dirs[d] {
			return
		}
		addDir(path.Dir(d))
		dirs[d] = true
		cw.Dir(d, 0o755)
	}
	base := "lib/modules/" + kver
	addDir(base)
	for _, m := range mods {
		p := base + "/" + m.rel
		addDir(path.Dir(p))
		cw.File(p, 0o644, data[m.rel])
	}
	cw.File(base+"/modules.dep", 0o644, depText)
	if len(aliasText) > 0 {
		cw.File(base+"/modules.alias", 0o644, aliasText)
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("e2e: cpio: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// uncompressedName maps "x.ko.xz" (and .zst, .gz) to "x.ko".
func uncompressedName(p string) string {
	for _, ext := range moduleExts[1:] {
		if strings.HasSuffix(p, ext) {
			return strings.TrimSuffix(p, ext) + ".ko"
		}
	}
	return p
}

// checkLoadOrder verifies, against a modules.dep, that every module's dependencies
// are packed and come before it.
func checkLoadOrder(mods []module, modulesDep string) error {
	deps := map[string][]string{}
	for _, line := range strings.Split(modulesDep, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var ds []string
		for _, d := range strings.Fields(v) {
			ds = append(ds, uncompressedName(d))
		}
		deps[uncompressedName(k)] = ds
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.rel] = i
	}
	for i, m := range mods {
		d, ok := deps[m.rel]
		if !ok {
			return fmt.Errorf("e2e: %s missing from the generated modules.dep", m.rel)
		}
		for _, dep := range d {
			j, ok := pos[dep]
			if !ok {
				return fmt.Errorf("e2e: module %s needs %s, which is not in the module list", m.name, dep)
			}
			if j > i {
				return fmt.Errorf("e2e: module %s needs %s, listed after it", m.name, dep)
			}
		}
	}
	return nil
}
