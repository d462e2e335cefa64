//go:build linux

// Package readme runs the README's walk-through as written: every ```sh block that
// follows a "<!-- readme-test: run -->" line, in order, in one bash (set -euo
// pipefail, so variables carry from block to block), against a real `bootchain up`
// started as `make run` starts it, inside a private network namespace. The README
// cannot drift from the code without this test failing.
package readme

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/test/lab"
)

// runMarker, on its own line, marks the next ```sh block as one the test runs.
const runMarker = "<!-- readme-test: run -->"

// block is one ```sh block of the README.
type block struct {
	line int // README line of the opening fence
	text string
}

func (b block) name() string { return fmt.Sprintf("README.md:%d", b.line) }

// runBlocks returns the marked ```sh blocks of the markdown in src, in order.
func runBlocks(src string) ([]block, error) {
	var (
		blocks          []block
		marked, inBlock bool
		cur             block
		body            []string
	)
	sc := bufio.NewScanner(strings.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case inBlock && strings.TrimSpace(line) == "```":
			cur.text = strings.Join(body, "\n") + "\n"
			blocks = append(blocks, cur)
			inBlock, body = false, nil
		case inBlock:
			body = append(body, line)
		case strings.TrimSpace(line) == runMarker:
			marked = true
		case marked && strings.TrimSpace(line) == "":
		case marked && strings.TrimSpace(line) == "```sh":
			inBlock, marked, cur = true, false, block{line: n}
		case marked:
			return nil, fmt.Errorf("README.md:%d: %q must be followed by a ```sh block, got %q", n, runMarker, line)
		}
	}
	if inBlock {
		return nil, fmt.Errorf("%s: block never closed", cur.name())
	}
	return blocks, sc.Err()
}

func TestRunBlocksParse(t *testing.T) {
	src := "# t\n\n```sh\nnot run\n```\n\n" + runMarker + "\n```sh\necho a\necho b\n```\n" + runMarker + "\n\n```sh\necho c\n```\n"
	bs, err := runBlocks(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 || bs[0].text != "echo a\necho b\n" || bs[0].line != 8 || bs[1].text != "echo c\n" {
		t.Fatalf("blocks = %+v", bs)
	}
	if _, err := runBlocks(runMarker + "\n```text\nx\n```\n"); err == nil {
		t.Fatal("a marker before a non-sh block: no error")
	}
}

// kernelPath is how the README names the kernel it uploads.
const kernelPath = "/boot/vmlinuz-$(uname -r)"

func TestWalkthrough(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skipf("README walk-through needs a lab network namespace: %v", err)
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("README walk-through needs cpio (Debian package cpio; scripts/install-deps.sh)")
	}
	if _, err := os.Stat("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		t.Skip("README walk-through needs Debian's iPXE binaries (package ipxe; scripts/install-deps.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	root := moduleRoot(t, ctx)
	src, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := runBlocks(string(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) < 3 {
		t.Fatalf("README.md has %d blocks marked %q; the walk-through has more", len(blocks), runMarker)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	run(t, ctx, root, "go", "build", "-o", bin+"/", "./tools/bootchain", "./tools/bootctl")
	// The README's G= runs grpcurl with `go tool`: fetch and build it here, where
	// the network is, so the namespace (which has none) finds it cached.
	run(t, ctx, root, "go", "-C", "tools/grpcurl", "tool", "grpcurl", "-version")

	l := lab.NewT(t, lab.Config{Prefix: "rdm"})
	ns := l.Main()
	env := cleanEnv(bin, dir)

	// `make run`: bin/bootchain up --data-dir $(DATA_DIR), nothing else.
	logPath := filepath.Join(dir, "bootchain.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	up := ns.Command(filepath.Join(bin, "bootchain"), "up", "--data-dir", filepath.Join(dir, "var"))
	up.Stdout, up.Stderr, up.Env = logf, logf, env
	proc, err := l.Start(up)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proc.Stop(10 * time.Second); err != nil {
			t.Logf("stopping bootchain: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("bootchain log:\n%s", b)
		}
	})
	waitUp(t, ctx, logPath, proc)

	// The README uploads the running kernel; where /boot has none (containers), a
	// small file stands in.
	script := buildScript(blocks)
	if out, err := exec.Command("sh", "-c", "test -f "+kernelPath).CombinedOutput(); err != nil {
		stand := filepath.Join(dir, "vmlinuz")
		if err := os.WriteFile(stand, []byte("a kernel stands in here\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("no %s here (%v%s): uploading %s instead", kernelPath, err, out, stand)
		script = strings.ReplaceAll(script, kernelPath, stand)
	}
	scriptPath := filepath.Join(dir, "walkthrough.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name(), "bash", scriptPath)
	cmd.Dir, cmd.Env, cmd.WaitDelay = root, env, 5*time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		b, output := failedBlock(blocks, string(out))
		t.Fatalf("README block %s failed: %v\n--- block:\n%s--- its output:\n%s", b.name(), err, b.text, output)
	}
	t.Logf("walk-through output:\n%s", out)
}

// blockMark starts each block's output in the script's output.
const blockMark = "=== readme block "

// buildScript joins the blocks into one bash script that announces each block
// before running it and names the failing command.
func buildScript(blocks []block) string {
	var b strings.Builder
	b.WriteString("set -euo pipefail\n")
	b.WriteString("trap 'echo \"readme: command failed (exit $?): $BASH_COMMAND\" >&2' ERR\n")
	for i, bl := range blocks {
		fmt.Fprintf(&b, "echo '%s%d'\n", blockMark, i)
		b.WriteString(bl.text)
	}
	return b.String()
}

// failedBlock returns the block whose output the script's output ends with, and
// that output.
func failedBlock(blocks []block, out string) (block, string) {
	i := strings.LastIndex(out, blockMark)
	if i < 0 {
		return block{text: "(before the first block)\n"}, out
	}
	rest := out[i+len(blockMark):]
	numStr, output, _ := strings.Cut(rest, "\n")
	var n int
	if _, err := fmt.Sscan(numStr, &n); err != nil || n < 0 || n >= len(blocks) {
		return block{text: "(unknown block)\n"}, out
	}
	return blocks[n], output
}

// cleanEnv is this process's environment for the walk-through: bin first on PATH
// (bootctl, as the README's build line puts it there), TMPDIR and XDG_CONFIG_HOME in
// the test's folder, and no OTEL_* or BOOTCHAIN_* settings of the developer's.
func cleanEnv(bin, dir string) []string {
	tmp := filepath.Join(dir, "tmp")
	_ = os.MkdirAll(tmp, 0o755)
	// bootchain up writes the client config bootctl reads where a user's would
	// be: here, in the test's folder, not in the developer's ~/.config.
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "TMPDIR=" + tmp, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "TMPDIR" || k == "XDG_CONFIG_HOME" || strings.HasPrefix(k, "OTEL_") || strings.HasPrefix(k, "BOOTCHAIN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitUp waits for the launcher's "bootchain is up" line.
func waitUp(t *testing.T, ctx context.Context, logPath string, proc *lab.Proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "bootchain is up") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("bootchain not up: %v", ctx.Err())
		case <-proc.Done():
			t.Fatalf("bootchain exited before it was up: %v", proc.Err())
		case <-tick.C:
		}
	}
}

func moduleRoot(t *testing.T, ctx context.Context) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		t.Fatalf("not inside the bootchain module: go env GOMOD = %q (%v)", mod, err)
	}
	return filepath.Dir(mod)
}

func run(t *testing.T, ctx context.Context, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
