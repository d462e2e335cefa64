package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The subset of iPXE's script language that boot scripts use: chain, kernel,
// initrd, boot, echo, sleep, goto with labels, exit, "|| goto label" and
// ${var[:type]} expansion. Anything else fails the script, as a command iPXE does
// not know would.

// ipxeEnv is what a script runs against: the machine's settings and its actions.
type ipxeEnv interface {
	// setting returns an iPXE setting (net0/mac, buildarch, platform, ...).
	setting(name string) (string, bool)
	// fetch downloads a URL; for chain, it returns the body.
	fetch(kind, url string, keep bool) ([]byte, error)
	// boot hands over to the kernel fetched last, with its command line.
	boot(kernelArgs []string) error
	// sleep waits, as iPXE's sleep does.
	sleep(d time.Duration)
}

// errExit ends a script with "exit" (iPXE then boots the next device).
var errExit = errors.New("script exited")

// ipxeLine is one parsed script line.
type ipxeLine struct {
	label   string   // ":name"
	args    []string // command and arguments; empty for blank, comment and label lines
	orGoto  string   // "|| goto label"
	orFalse bool     // "|| ..." with something else: failure ignored
}

// parseScript splits a script into lines; the first must be "#!ipxe".
func parseScript(text string) ([]ipxeLine, error) {
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(strings.TrimSpace(lines[0]), "#!ipxe") {
		return nil, errors.New("not an iPXE script (no #!ipxe)")
	}
	var out []ipxeLine
	for _, raw := range lines[1:] {
		s := strings.TrimSpace(raw)
		switch {
		case s == "" || strings.HasPrefix(s, "#"):
			out = append(out, ipxeLine{})
			continue
		case strings.HasPrefix(s, ":"):
			out = append(out, ipxeLine{label: strings.TrimSpace(s[1:])})
			continue
		}
		var l ipxeLine
		cmd, alt, hasAlt := strings.Cut(s, "||")
		if hasAlt {
			f := strings.Fields(alt)
			if len(f) == 2 && f[0] == "goto" {
				l.orGoto = f[1]
			} else {
				l.orFalse = true
			}
		}
		l.args = strings.Fields(cmd)
		out = append(out, l)
	}
	return out, nil
}

// expand replaces ${name} and ${name:type} with the machine's settings.
func expand(env ipxeEnv, s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		name, typ, _ := strings.Cut(s[i+2:i+j], ":")
		v, _ := env.setting(name)
		switch typ {
		case "uristring":
			v = url.QueryEscape(v)
		case "hexhyp":
			v = strings.ReplaceAll(v, ":", "-")
		}
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

// maxChain bounds chained scripts, so that a loop of scripts ends.
const maxChain = 16

// runScript runs a script; it returns nil once boot handed over to the kernel.
func runScript(env ipxeEnv, text string, depth int) error {
	if depth > maxChain {
		return errors.New("too many chained scripts")
	}
	lines, err := parseScript(text)
	if err != nil {
		return err
	}
	labels := map[string]int{}
	for i, l := range lines {
		if l.label != "" {
			labels[l.label] = i
		}
	}
	var kernelArgs []string
	// echoed and swallowed say why a script exits: the last line it echoed (a
	// default script says what it boots) and the last error a "|| goto" hid (a
	// download that failed).
	var echoed string
	var swallowed error
	exit := func() error {
		switch {
		case swallowed != nil:
			return fmt.Errorf("%w after: %w", errExit, swallowed)
		case echoed != "":
			return fmt.Errorf("%w (it echoed %q)", errExit, echoed)
		}
		return errExit
	}
	steps := 0
	for pc := 0; pc < len(lines); pc++ {
		if steps++; steps > 10000 {
			return errors.New("script loops")
		}
		l := lines[pc]
		if len(l.args) == 0 {
			continue
		}
		args := make([]string, len(l.args))
		for i, a := range l.args {
			args[i] = expand(env, a)
		}
		err := func() error {
			switch cmd := args[0]; cmd {
			case "echo":
				echoed = strings.Join(args[1:], " ")
				return nil
			case "prompt", "console":
				return nil
			case "sleep":
				if len(args) != 2 {
					return fmt.Errorf("sleep: %q", args)
				}
				n, err := strconv.Atoi(args[1])
				if err != nil || n < 0 {
					return fmt.Errorf("sleep: %q", args[1])
				}
				env.sleep(time.Duration(n) * time.Second)
				return nil
			case "goto":
				if len(args) != 2 {
					return fmt.Errorf("goto: %q", args)
				}
				to, ok := labels[args[1]]
				if !ok {
					return fmt.Errorf("goto: no label %q", args[1])
				}
				pc = to
				return nil
			case "exit":
				return exit()
			case "chain":
				u := firstNonFlag(args[1:])
				if u == "" {
					return errors.New("chain: no URL")
				}
				body, err := env.fetch("script", u, true)
				if err != nil {
					return err
				}
				err = runScript(env, string(body), depth+1)
				if err == nil {
					pc = len(lines) // booted
				}
				return err
			case "kernel", "imgexec":
				f := nonFlags(args[1:])
				if len(f) == 0 {
					return errors.New("kernel: no URL")
				}
				if _, err := env.fetch("kernel", f[0], false); err != nil {
					return err
				}
				kernelArgs = f[1:]
				return nil
			case "initrd", "module", "imgfetch":
				f := nonFlags(args[1:])
				if len(f) == 0 {
					return errors.New("initrd: no URL")
				}
				_, err := env.fetch("initrd", f[0], false)
				return err
			case "boot":
				if kernelArgs == nil {
					return errors.New("boot: no kernel")
				}
				if err := env.boot(kernelArgs); err != nil {
					return err
				}
				pc = len(lines)
				return nil
			default:
				return fmt.Errorf("unknown command %q", cmd)
			}
		}()
		switch {
		case err == nil:
		case errors.Is(err, errExit):
			return err
		case l.orGoto != "":
			to, ok := labels[l.orGoto]
			if !ok {
				return fmt.Errorf("goto: no label %q (after: %w)", l.orGoto, err)
			}
			swallowed = err
			pc = to
		case l.orFalse:
		default:
			return err
		}
		if kernelArgs != nil && pc >= len(lines) && args[0] == "boot" {
			return nil
		}
		if args[0] == "chain" && err == nil && pc >= len(lines) {
			return nil
		}
	}
	return exit()
}

// nonFlags drops iPXE's --flags (--name x takes a value).
func nonFlags(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "--") {
			if (a == "--name" || a == "-n") && i+1 < len(args) {
				i++
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

func firstNonFlag(args []string) string {
	f := nonFlags(args)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
