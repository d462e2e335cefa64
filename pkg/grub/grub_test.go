package grub_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/grub"
)

func TestQuote(t *testing.T) {
	for _, s := range []string{"plain", "a b", "it's", "'", "''", `\`, `a\'b`, "${x}", "$prefix", "a;reboot", "a|b&&c", "{ x }", "#no", `"dq"`, "ünï"} {
		q, err := grub.Quote(s)
		if err != nil {
			t.Fatalf("Quote(%q): %v", s, err)
		}
		words, exp, seps, err := grub.Lex("echo " + q)
		if err != nil {
			t.Fatal(err)
		}
		if len(words) != 2 || words[1] != s || len(exp) != 0 || len(seps) != 0 {
			t.Errorf("Quote(%q) = %s: lexes as %q, expansions %q, separators %q", s, q, words, exp, seps)
		}
	}
	for _, s := range []string{"a\nreboot", "a\rb", "\x00", "\x7f", "\xff", "a\u2028b"} {
		if _, err := grub.Quote(s); !errors.Is(err, grub.ErrUnsafe) {
			t.Errorf("Quote(%q) = %v, want ErrUnsafe", s, err)
		}
	}
}

func TestParseName(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want grub.Request
		err  bool
	}{
		"config":          {in: "grub/grub.cfg-52:54:00:12:34:56", want: grub.Request{MAC: "52:54:00:12:34:56"}},
		"upper case":      {in: "grub/grub.cfg-52:54:00:AB:CD:EF", want: grub.Request{MAC: "52:54:00:ab:cd:ef"}},
		"menu choice":     {in: "grub/profile/debian-12/grub.cfg-52:54:00:12:34:56", want: grub.Request{MAC: "52:54:00:12:34:56", Profile: "debian-12"}},
		"the bootstrap":   {in: "grub/grub.cfg", err: true},
		"not a mac":       {in: "grub/grub.cfg-nope", err: true},
		"other files":     {in: "grub/x86_64-efi/command.lst", err: true},
		"profile escapes": {in: "grub/profile/../grub.cfg-52:54:00:12:34:56", err: true},
		"nested profile":  {in: "grub/profile/a/b/grub.cfg-52:54:00:12:34:56", err: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := grub.ParseName(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if err == nil {
				if got != tc.want {
					t.Errorf("got %+v, want %+v", got, tc.want)
				}
				if n := grub.ConfigName(got.MAC); tc.want.Profile == "" && n != strings.ToLower(tc.in) {
					t.Errorf("ConfigName = %q, want %q", n, tc.in)
				}
			}
		})
	}
}

// FuzzQuote: whatever Quote accepts lexes back as exactly that one word,
// with no expansion and no separator.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"plain", "it's", `\'`, "${x}", "a;b", "}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := grub.Quote(s)
		if err != nil {
			return
		}
		words, exp, seps, err := grub.Lex("echo " + q)
		if err != nil || len(words) != 2 || words[1] != s || len(exp) != 0 || len(seps) != 0 {
			t.Fatalf("Quote(%q) = %s: %q %q %q %v", s, q, words, exp, seps, err)
		}
	})
}

// FuzzParseName: a TFTP name tftpd forwards to bootapi parses only into a
// normalized MAC and a plain profile name, and what it names is what
// ConfigName or ChoiceName write for them.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"grub/grub.cfg-52:54:00:12:34:56", "grub/profile/p/grub.cfg-52:54:00:12:34:56", "grub/profile/../grub.cfg-x", "grub/grub.cfg"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		req, err := grub.ParseName(name)
		if err != nil {
			return
		}
		again := grub.ConfigName(req.MAC)
		if req.Profile != "" {
			if !grub.ValidProfile(req.Profile) {
				t.Fatalf("%q: profile %q", name, req.Profile)
			}
			again = grub.ChoiceName(req.MAC, req.Profile)
		}
		if back, err := grub.ParseName(again); err != nil || back != req {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", name, req, again, back, err)
		}
	})
}
