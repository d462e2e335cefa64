package daemon

import (
	"os"
	"runtime/debug"
	"syscall"
)

// Runtime defaults for bootchain's servers, applied by Main unless the standard
// variables say otherwise.
const (
	// gcPercent replaces Go's default GOGC=100. The servers allocate a little per
	// packet or request and keep a large, long-lived heap (the watch-fed caches,
	// the embedded etcd's index), so at 100 the collector runs often and mostly
	// rescans what has not changed.
	gcPercent = 400
	// memLimitShare of physical memory is the soft limit that keeps the larger GC
	// goal from growing the heap without bound: the collector works harder as the
	// heap nears it.
	memLimitShare = 4
	minMemLimit   = 512 << 20
)

// TuneRuntime sets the garbage collector's target to gcPercent unless GOGC is
// set, and a soft memory limit of a quarter of physical memory (at least 512 MiB)
// unless GOMEMLIMIT is set. Main calls it; benchmarks that run a service in their
// own process call it too, so they measure what the daemons run.
func TuneRuntime() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(gcPercent)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		var si syscall.Sysinfo_t
		if err := syscall.Sysinfo(&si); err == nil {
			total := int64(si.Totalram) * int64(si.Unit)
			debug.SetMemoryLimit(max(total/memLimitShare, minMemLimit))
		}
	}
}
