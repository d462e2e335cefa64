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

// Stat is /proc/<pid>/stat's fields after the command name (which may hold
// spaces): [0] is the state, [1] the parent's PID, [11] utime, [12] stime,
// [13] cutime and [14] cstime. nil when the process is gone.
func Stat(pid int) []string {
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

// ticks sums the fields at idx of f, clock ticks of 100 Hz, in seconds.
func ticks(f []string, idx ...int) float64 {
	var sum float64
	for _, i := range idx {
		if i < len(f) {
			v, _ := strconv.ParseFloat(f[i], 64)
			sum += v
		}
	}
	return sum / 100
}

// Own is utime+stime of pid (all its threads) in seconds; 0 when it is gone.
func Own(pid int) float64 { return ticks(Stat(pid), 11, 12) }

// WithReaped is Own plus the CPU time of pid's children it has reaped
// (cutime+cstime: tftpd-hpa forks one per transfer).
func WithReaped(pid int) float64 { return ticks(Stat(pid), 11, 12, 13, 14) }

// Seconds is the user+system CPU time of pid and of its children that are
// still running (nginx's workers), from /proc.
func Seconds(pid int) float64 {
	total := Own(pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		if f := Stat(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			total += Own(p)
		}
	}
	return total
}

// Tree is the CPU time of the processes roots and all their descendants,
// running or reaped: each root with its reaped children, each live
// descendant on its own.
func Tree(roots ...int) float64 {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := Stat(pid); len(f) > 2 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	var total float64
	seen := map[int]bool{}
	var walk func(int, bool)
	walk = func(pid int, root bool) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		if root {
			total += WithReaped(pid)
		} else {
			total += Own(pid)
		}
		for _, c := range children[pid] {
			walk(c, false)
		}
	}
	for _, r := range roots {
		walk(r, true)
	}
	return total
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
