package main

import (
	"strings"
	"testing"
)

// TestErrors checks that errors are told in bootctl's own words: the flag or
// argument at fault, the address flag of a service that cannot be reached,
// and exit status 2 for a command line that cannot run.
func TestErrors(t *testing.T) {
	e := startEnv(t)
	e.mustRun("profiles", "create", "p", "--kernel", "https://example.org/linux")
	e.mustRun("machines", "register", "52:54:00:12:34:56")
	e.mustRun("jobs", "create", "--mac", "52:54:00:12:34:56", "--profile", "p")
	for name, tc := range map[string]struct {
		args []string
		code int
		want []string
	}{
		"field to flag":        {[]string{"machines", "register", "52:54:00:12:34:57", "--action", "profile"}, 1, []string{"bootctl: --profile: required when --action is profile\n"}},
		"precondition to flag": {[]string{"jobs", "create", "--mac", "52:54:00:12:34:56", "--profile", "p"}, 1, []string{"bootctl: --mac: machine 52:54:00:12:34:56 already has an unfinished job"}},
		"argument":             {[]string{"machines", "get", "zz"}, 1, []string{`bootctl: MAC: not a 48-bit MAC address: "zz"`}},
		"name argument":        {[]string{"profiles", "create", "bad name", "--kernel", "x"}, 1, []string{`bootctl: NAME: "bad name": want`}},
		"template":             {[]string{"profiles", "create", "q", "--kernel", "x", "--cmdline", "{{.Nope}}"}, 1, []string{"bootctl: --cmdline: template:", "bootctl profiles fields"}},
		"missing artifact":     {[]string{"profiles", "create", "q", "--kernel", "nosuch/kernel"}, 1, []string{`bootctl: --kernel: artifact "nosuch/kernel" does not exist` + "\n"}},
		"missing initrd":       {[]string{"profiles", "create", "q", "--kernel", "https://example.org/linux", "--initrd", "nosuch/initrd"}, 1, []string{`bootctl: --initrd: artifact "nosuch/initrd" does not exist` + "\n"}},
		"updated to missing":   {[]string{"profiles", "update", "p", "--kernel", "nosuch/kernel"}, 1, []string{`bootctl: --kernel: artifact "nosuch/kernel" does not exist` + "\n"}},
		"preview config":       {[]string{"machines", "preview", "52:54:00:12:34:56", "--config", "passwd"}, 1, []string{`bootctl: --config: "passwd": want all or one of preseed, kickstart`}},
		"preview no files":     {[]string{"machines", "preview", "52:54:00:12:34:56", "--config", "preseed"}, 1, []string{"bootctl: profile p has none of preseed"}},
		"template of a file":   {[]string{"profiles", "update", "p", "--user-data", "testdata/installer/bad-user-data.yaml"}, 1, []string{"bootctl: --user-data: a value changes the document's structure"}},
		"preview fact":         {[]string{"machines", "preview", "52:54:00:12:34:56", "--arch", "x86\nshell"}, 1, []string{"bootctl: --arch: control character"}},
		"not found":            {[]string{"profiles", "get", "nope"}, 1, []string{`bootctl: profile "nope" not found`}},
		"dhcpd down":           {[]string{"leases", "list"}, 1, []string{"bootctl: cannot reach dhcpd at " + e.closed + " (is it running? set --dhcpd-addr)\n"}},
		"tftpd down":           {[]string{"tftp", "stats"}, 1, []string{"bootctl: cannot reach tftpd at " + e.closed + " (is it running? set --tftpd-addr)\n"}},
		"missing argument":     {[]string{"machines", "get"}, 2, []string{"bootctl: bootctl machines get: missing MAC\nRun 'bootctl machines get --help' for usage.\n"}},
		"extra argument":       {[]string{"machines", "get", "a", "b"}, 2, []string{`unexpected argument "b"`}},
		"flag as argument":     {[]string{"trace", "-x"}, 2, []string{"unknown shorthand flag: 'x' in -x"}},
		"unknown flag":         {[]string{"jobs", "list", "--bogus"}, 2, []string{"bootctl jobs list: unknown flag: --bogus"}},
		"unknown command":      {[]string{"jobs", "lsit"}, 2, []string{`unknown command "lsit" for "bootctl jobs"; did you mean list?`}},
		"unknown top command":  {[]string{"job", "list", "x"}, 2, []string{`unexpected argument "x"`}},
		"bad output":           {[]string{"-o", "xml", "machines", "list"}, 2, []string{`--output "xml": want table, json or yaml`}},
		"bad enum":             {[]string{"jobs", "list", "--state", "done"}, 2, []string{`--state "done": want pending, dispatched, running, succeeded, failed, canceled, expired`}},
		"nothing to update":    {[]string{"machines", "update", "52:54:00:12:34:56"}, 2, []string{"nothing to change"}},
		"required flags":       {[]string{"jobs", "create", "--mac", "52:54:00:12:34:56"}, 2, []string{"--mac and --profile are required"}},
		"bad label":            {[]string{"machines", "update", "52:54:00:12:34:56", "--label", "rack"}, 2, []string{`--label "rack": want key=value`}},
	} {
		t.Run(name, func(t *testing.T) {
			out, stderr, code := e.run(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
}

func TestCLIWords(t *testing.T) {
	cmd := machinesRegisterCommand(newGlobal(nil))
	for in, want := range map[string]string{
		"required when default_action is ACTION_PROFILE":          "required when --action is profile",
		"machine.default_profile must name a profile":             "--profile must name a profile",
		`"default_profile_x" stays, and so does name or mac`:      `"default_profile_x" stays, and so does name or mac`,
		"ipv4_address 10.0.0.300: not an IPv4 address (site lab)": "--ip 10.0.0.300: not an IPv4 address (site lab)",
	} {
		if got := cliWords(cmd, in); got != want {
			t.Errorf("cliWords(%q) = %q, want %q", in, got, want)
		}
	}
	for field, want := range map[string]string{
		"machine.labels[rack]": "--label", "machine.mac": "MAC", "machine.facts.arch": "MAC", "unknown": "unknown",
	} {
		if got := flagFor(cmd, field); got != want {
			t.Errorf("flagFor(%q) = %q, want %q", field, got, want)
		}
	}
}
