//go:build linux

package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/test/e2e"
)

// Binaries are the per-service binaries and bootctl, by name: "artifactstore",
// "bootapi", "dhcpd", "tftpd", "bootctl".
type Binaries map[string]string

// binPkgs are the packages Build builds, by binary name.
var binPkgs = map[string]string{
	"artifactstore": "./services/artifactstore/cmd/artifactstore",
	"bootapi":       "./services/bootapi/cmd/bootapi",
	"dhcpd":         "./services/dhcpd/cmd/dhcpd",
	"tftpd":         "./services/tftpd/cmd/tftpd",
	"bootctl":       "./tools/bootctl",
}

// Build builds the per-service binaries and bootctl into cacheDir/<key>/ (with
// the flags of a plain go build, so Go's build cache of other builds and tests
// serves the packages), where key hashes the Go version and
// the content of every source file they are built from: a second test binary (or
// run) with the same sources reuses them without linking again.
func Build(ctx context.Context, cacheDir string) (Binaries, error) {
	root, err := e2e.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	key, err := sourceKey(ctx, root)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, key)
	bins := Binaries{}
	complete := true
	for name := range binPkgs {
		bins[name] = filepath.Join(dir, name)
		if _, err := os.Stat(bins[name]); err != nil {
			complete = false
		}
	}
	if complete {
		return bins, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(cacheDir, "build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	args := []string{"build", "-o", tmp + "/"}
	for _, name := range sortedNames() {
		args = append(args, binPkgs[name])
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("fleet: go build: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// Another test binary may have finished the same key meanwhile: either
	// rename wins and both hold the same content.
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "bootctl")); serr != nil {
			return nil, fmt.Errorf("fleet: keep binaries: %w", err)
		}
	}
	return bins, nil
}

// BuildCached is Build into the user's cache (~/.cache/bootchain-e2e/fleet-bin),
// once per test binary.
func BuildCached(ctx context.Context) (Binaries, error) {
	buildOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			buildErr = err
			return
		}
		built, buildErr = Build(ctx, filepath.Join(cache, "bootchain-e2e", "fleet-bin"))
	})
	return built, buildErr
}

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
)

func sortedNames() []string {
	var names []string
	for n := range binPkgs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// goPkg is the part of `go list -json` sourceKey reads.
type goPkg struct {
	Dir        string
	ImportPath string
	Standard   bool
	Module     *struct {
		Path, Version string
		Main          bool
	}
	GoFiles, SFiles, EmbedFiles []string
}

// sourceKey hashes what the binaries are built from: the Go version, go.sum, and
// for each package they import, its module version (dependencies) or the content
// of its source and embedded files (this module).
func sourceKey(ctx context.Context, root string) (string, error) {
	h := sha256.New()
	ver, err := exec.CommandContext(ctx, "go", "version").Output()
	if err != nil {
		return "", fmt.Errorf("fleet: go version: %w", err)
	}
	h.Write(ver)
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := hashFile(h, filepath.Join(root, f)); err != nil {
			return "", err
		}
	}
	args := []string{"list", "-deps", "-json=Dir,ImportPath,Standard,Module,GoFiles,SFiles,EmbedFiles"}
	for _, name := range sortedNames() {
		args = append(args, binPkgs[name])
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fleet: go list: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p goPkg
		if err := dec.Decode(&p); err != nil {
			return "", fmt.Errorf("fleet: go list: %w", err)
		}
		if p.Standard {
			continue
		}
		fmt.Fprintf(h, "pkg %s\n", p.ImportPath)
		if p.Module != nil && !p.Module.Main {
			fmt.Fprintf(h, "mod %s@%s\n", p.Module.Path, p.Module.Version)
			continue
		}
		files := append(append(append([]string(nil), p.GoFiles...), p.SFiles...), p.EmbedFiles...)
		sort.Strings(files)
		for _, f := range files {
			fmt.Fprintf(h, "file %s\n", f)
			if err := hashFile(h, filepath.Join(p.Dir, f)); err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:24], nil
}

func hashFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
