package installer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// hostile is text made of what the formats read as structure: quotes, YAML
// and flow indicators, a comment, a kickstart section and option, a preseed
// directive, shell substitutions. Every format must carry it as a value.
const hostile = `x" 'y' a: b #c - {d: [e, f]} & *g !h |i >j %end --k=l d-i m/n string o; $(p) ${q} ` + "`r`"

// hostileLines adds what only the formats that can escape it carry (YAML,
// JSON): line breaks, a backslash, a NUL, a BOM and an invalid byte.
const hostileLines = "\n- s: t\n\\\x00\u2028\uFEFF\xff"

// Sample is the data a template is checked with: a benign machine, or
// (hostile) one whose every value is hostile text, with the same keys and as
// many SSH keys, so a template that only places values takes the same
// branches for both.
func Sample(f Format, hostileValues bool) *Data {
	d := &Data{Base: "http://bootapi.example/installer/v1/job-1/KEY/", Callback: "http://bootapi.example/ipxe/v1/report?job=job-1"}
	d.Machine.MAC, d.Machine.Hostname, d.Machine.Site = "52:54:00:00:00:01", "host1", "site1"
	d.Machine.Labels = map[string]string{"role": "worker"}
	d.Site.Name, d.Profile.Name, d.Job.ID = "site1", "profile1", "job-1"
	d.SSHAuthorizedKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbc admin@example"}
	if !hostileValues {
		return d
	}
	h := hostile
	if f == YAML || f == JSON {
		h += hostileLines
	}
	d.Machine.MAC, d.Machine.Hostname, d.Machine.Site = h, h, h
	d.Machine.Labels = map[string]string{"role": h}
	d.Site.Name, d.Profile.Name, d.Job.ID = h, h, h
	d.SSHAuthorizedKeys = []string{h}
	return d
}

// Check checks the template of f at field (e.g. "profile.installer.preseed"):
// it must parse and use only bounded constructs, render for a sample machine
// into a document its format reads, and render for a hostile sample into a
// document of the same shape, which proves that where this template puts its
// values, no value can change the document's structure. Every failure is an
// apierr field error naming field.
func Check(field string, f File, tmpl string) error {
	if tmpl == "" {
		return nil
	}
	if len(tmpl) > MaxTemplate {
		return apierr.Field(field, "longer than %d bytes", MaxTemplate)
	}
	benign, err := Render(f, tmpl, Sample(f.Format, false))
	if err != nil {
		return apierr.Field(field, "%v", trim(err))
	}
	want, err := Shape(f.Format, benign)
	if err != nil {
		return apierr.Field(field, "rendered for a sample machine, not a %s document: %v", f.Format, err)
	}
	bad, err := Render(f, tmpl, Sample(f.Format, true))
	if err != nil {
		return apierr.Field(field, "a value with quotes or %s indicators cannot be placed where this template puts it: %v", f.Format, trim(err))
	}
	got, err := Shape(f.Format, bad)
	if err != nil {
		return apierr.Field(field, "a value with quotes or %s indicators breaks the document where this template puts it (%v): %s", f.Format, err, advice(f.Format))
	}
	if got != want {
		return apierr.Field(field, "a value changes the document's structure where this template puts it (%s): %s", firstDiff(want, got), advice(f.Format))
	}
	return nil
}

func trim(err error) error {
	s := strings.TrimPrefix(err.Error(), ErrRender.Error())
	return errors.New(strings.TrimLeft(s, " :"))
}

func advice(f Format) string {
	switch f {
	case Preseed:
		return "put values in a directive's value, never in its owner, question or type"
	case Kickstart:
		return "put values after an option's '=' (--hostname={{.Machine.Hostname}}) or as a whole argument, never a command or an option name"
	case YAML:
		return "put a value where a whole YAML value goes (key: {{.Machine.Hostname}}), and build longer strings with printf ({{printf \"echo %s\" .Machine.Hostname}})"
	case JSON:
		return "put a value where a whole JSON value goes (\"hostname\": {{.Machine.Hostname}}), and build longer strings with printf"
	}
	return ""
}

// firstDiff names the first line where two shapes differ.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("expected %q, got %q", strings.TrimSpace(a), strings.TrimSpace(shorten(b)))
		}
	}
	return "same lines"
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// CheckProfile checks every installer template of p and its SSH keys.
func CheckProfile(p *bootapiv1.Profile) error {
	it := p.GetInstaller()
	for _, f := range Files {
		if err := Check("profile.installer."+f.Field, f, f.Template(it)); err != nil {
			return err
		}
	}
	return CheckKeys("profile.installer.ssh_authorized_keys", it.GetSshAuthorizedKeys())
}

// CheckKeys checks SSH public keys: at most 32, each one line of printable
// text "type base64 [comment]" of at most 8 KiB.
func CheckKeys(field string, keys []string) error {
	if len(keys) > 32 {
		return apierr.Field(field, "more than 32 keys")
	}
	for i, k := range keys {
		f := fmt.Sprintf("%s[%d]", field, i)
		if len(k) > 8<<10 {
			return apierr.Field(f, "longer than 8 KiB")
		}
		if strings.IndexFunc(k, func(r rune) bool { return lineBreaking(r) || r == '\\' || r == 0xfffd }) >= 0 || !validUTF8(k) {
			return apierr.Field(f, "want one line of printable text (no backslash)")
		}
		parts := strings.Fields(k)
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "ssh-") && !strings.HasPrefix(parts[0], "ecdsa-") && !strings.HasPrefix(parts[0], "sk-") {
			return apierr.Field(f, "want \"<type> <base64 key> [comment]\" (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*)")
		}
	}
	return nil
}
