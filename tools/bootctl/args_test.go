package main

import (
	"strings"
	"testing"
)

func TestLegacyArgs(t *testing.T) {
	root := newRootCommand(newGlobal(nil))
	for in, want := range map[string]string{
		"jobs create -mac M -profile P":                  "jobs create --mac M --profile P",
		"-o json jobs list":                              "-o json jobs list",
		"-bootapi 10.0.0.1:9080 machines list -l a=b":    "--bootapi 10.0.0.1:9080 machines list -l a=b",
		"profiles create x -kernel=k -menu":              "profiles create x --kernel=k --menu",
		"machines register M -hostname h -- -hostname":   "machines register M --hostname h -- -hostname",
		"profiles create x --cmdline -quiet -nosuchflag": "profiles create x --cmdline -quiet -nosuchflag",
		// -timeout was the job's before --timeout bounded every call.
		"jobs create -mac M -profile P -timeout 30m": "jobs create --mac M --profile P --job-timeout 30m",
		"jobs create -timeout=2h -mac M":             "jobs create --job-timeout=2h --mac M",
		"jobs list -timeout 5s":                      "jobs list --timeout 5s",
		"-timeout 5s jobs create -mac M":             "--timeout 5s jobs create --mac M",
	} {
		if got := strings.Join(legacyArgs(root, strings.Fields(in)), " "); got != want {
			t.Errorf("legacyArgs(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzLegacyArgs: the rewrite only ever adds one dash to a flag before "--"
// (or turns jobs create's old -timeout into --job-timeout), and leaves the rest
// as typed.
func FuzzLegacyArgs(f *testing.F) {
	root := newRootCommand(newGlobal(nil))
	for _, s := range []string{"jobs create -mac M -profile P", "-o json jobs list", "a -- -mac", "-kernel=x -=y --", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		in := strings.Fields(line)
		out := legacyArgs(root, in)
		if len(out) != len(in) {
			t.Fatalf("%q -> %q: count changed", in, out)
		}
		seenDashes := false
		for i := range in {
			seenDashes = seenDashes || in[i] == "--"
			jobTimeout := strings.HasPrefix(in[i], "-timeout") && strings.HasPrefix(out[i], "--job-timeout")
			if out[i] != in[i] && !jobTimeout && (seenDashes || out[i] != "-"+in[i] || strings.HasPrefix(in[i], "--")) {
				t.Fatalf("%q -> %q: %q became %q", in, out, in[i], out[i])
			}
		}
	})
}

// FuzzCLIWords: any server message can be rewritten without a panic, and one
// without an API name or enum value (no "_" or ".") comes back as it was.
func FuzzCLIWords(f *testing.F) {
	cmd := machinesRegisterCommand(newGlobal(nil))
	for _, s := range []string{"required when default_action is ACTION_PROFILE", "machine.labels[x]: bad", "$1 ${2}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		got := cliWords(cmd, msg)
		if !strings.ContainsAny(msg, "_.") && got != msg {
			t.Fatalf("cliWords(%q) = %q", msg, got)
		}
	})
}
