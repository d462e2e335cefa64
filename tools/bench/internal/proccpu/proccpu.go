// Package proccpu reads what processes cost in CPU time and pins the
// benchmark's side of a run to CPUs, for the benchmarks that put bootchain
// and its peer on the same cores one after the other.
package proccpu

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Seconds is the user+system CPU time of pid and of its children that are
// still running (nginx's workers), from /proc.
func Seconds(pid int) float64 {
	total := own(pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		if f := stat(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			total += own(p)
		}
	}
	return total
}

// stat is /proc/<pid>/stat's fields after the command name: [0] is the
// state, [1] the parent's PID, [11] and [12] utime and stime.
func stat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// own is utime+stime of pid alone, in seconds (clock ticks of 100 Hz).
func own(pid int) float64 {
	f := stat(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// PinSelf pins every thread of this process to cpu; threads started later
// inherit it from the thread that starts them, and so do child processes.
func PinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
		}
	}
	return nil
}
