package ipxe_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/ipxe"
)

func TestWordRejects(t *testing.T) {
	for name, in := range map[string]string{
		"newline":    "a\nshell",
		"cr":         "a\rshell",
		"expansion":  "${net0/ip}",
		"or":         "x||shell",
		"and":        "x&&shell",
		"space":      "a b",
		"tab":        "a\tb",
		"comment":    "#x",
		"label":      ":x",
		"trailing $": "a$",
		"nul":        "a\x00b",
		"empty":      "",
		"line sep":   "a\u2028b",
		"bad utf8":   "a\xffb",
		"pipe alone": "|",
		"c1 control": "a\u0085b",
	} {
		t.Run(name, func(t *testing.T) {
			if err := ipxe.CheckWord(in); !errors.Is(err, ipxe.ErrUnsafe) {
				t.Fatalf("CheckWord(%q) = %v, want ErrUnsafe", in, err)
			}
		})
	}
	for _, ok := range []string{"console=ttyS0,115200n8", "root=/dev/sda1", `quoted="x"`, "a$b", "ip=dhcp", "a|b"} {
		if err := ipxe.CheckWord(ok); err != nil {
			t.Errorf("CheckWord(%q): %v", ok, err)
		}
	}
}

func TestURLEscapes(t *testing.T) {
	u, _ := url.Parse("http://10.0.0.1:8081/artifacts/x")
	u.RawQuery = url.Values{"traceparent": {"00-ab-cd-01"}, "evil": {"${x} || shell\nreboot"}}.Encode()
	a := ipxe.URL(u)
	var b ipxe.Builder
	b.Line("chain", a)
	s, err := b.Script()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"${", "||", " shell", "\nreboot"} {
		if strings.Contains(strings.TrimPrefix(s, "#!ipxe\n"), bad) {
			t.Fatalf("script %q contains %q", s, bad)
		}
	}
	if _, err := ipxe.URL(&url.URL{Scheme: "javascript", Opaque: "x"}).String(); err == nil {
		t.Fatal("non-http scheme accepted")
	}
}

func TestBuilderStopsAtFirstBadValue(t *testing.T) {
	var b ipxe.Builder
	b.Line("echo", ipxe.Text("hello   world"))
	b.Line("kernel", ipxe.Word("ok"), ipxe.Word("bad\nshell"))
	b.Line("boot")
	if _, err := b.Script(); !errors.Is(err, ipxe.ErrUnsafe) {
		t.Fatalf("Script: %v", err)
	}
}
