// Package benchenv is what the whole-chain benchmarks (tools/bench/boot,
// tools/bench/storm) share about the machine they run on: its load, and the
// launcher and bootctl built once from this tree.
package benchenv

import (
	"context"
	"os"
	"strings"
	"sync"

	"github.com/bootchain/bootchain/test/e2e"
)

// LoadAvg is /proc/loadavg's 1, 5 and 15 minute averages, or "?".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

var (
	toolsOnce sync.Once
	tools     e2e.Tools
	toolsErr  error
)

// Tools builds the launcher and bootctl from the module of the working
// directory, once per process, into a temporary directory.
func Tools(ctx context.Context) (e2e.Tools, error) {
	toolsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bootchain-bench-tools-")
		if err != nil {
			toolsErr = err
			return
		}
		tools, toolsErr = e2e.BuildTools(ctx, dir)
	})
	return tools, toolsErr
}
