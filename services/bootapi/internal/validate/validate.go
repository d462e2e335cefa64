// Package validate checks bootapi's inputs. Every failure is an *apierr.FieldError
// naming the field, so the gRPC layer answers InvalidArgument with the field in
// errdetails.BadRequest. Values accepted here are also safe to render into iPXE
// scripts (the renderer checks again).
package validate

import (
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/artifactref"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grub"
	"github.com/bootchain/bootchain/pkg/ipxe"
	"github.com/bootchain/bootchain/pkg/macaddr"
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	siteRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	labelValRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
	hostLabel  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	artifactRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)
)

// MaxCmdline bounds a profile's command line template.
const MaxCmdline = 2048

// MAC normalizes a MAC or names field.
func MAC(field, s string) (string, error) {
	if s == "" {
		return "", apierr.Field(field, "required")
	}
	m, err := macaddr.Normalize(s)
	if err != nil {
		return "", apierr.Field(field, "%v", err)
	}
	return m, nil
}

// Name checks a profile name.
func Name(field, s string) error {
	if s == "" {
		return apierr.Field(field, "required")
	}
	if !nameRE.MatchString(s) {
		return apierr.Field(field, "%q: want 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit", s)
	}
	return nil
}

// Site checks a site name; empty is allowed (the default site).
func Site(field, s string) error {
	if s != "" && !siteRE.MatchString(s) {
		return apierr.Field(field, "%q: want 1-63 lower-case letters, digits or '-'", s)
	}
	return nil
}

// Hostname checks an RFC 1123 host name; empty is allowed.
func Hostname(field, s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 253 {
		return apierr.Field(field, "longer than 253 characters")
	}
	for _, l := range strings.Split(s, ".") {
		if !hostLabel.MatchString(l) {
			return apierr.Field(field, "%q: want dot-separated labels of letters, digits and '-'", s)
		}
	}
	return nil
}

// Labels checks label keys and values.
func Labels(field string, m map[string]string) error {
	if len(m) > 64 {
		return apierr.Field(field, "more than 64 labels")
	}
	for k, v := range m {
		if !labelKeyRE.MatchString(k) {
			return apierr.Field(field+"["+safeKey(k)+"]", "label key: want letters, digits, '.', '_', '/' or '-', 1-63 characters")
		}
		if !labelValRE.MatchString(v) {
			return apierr.Field(field+"["+k+"]", "label value %q: want letters, digits, '.', '_' or '-', up to 63 characters", v)
		}
	}
	return nil
}

func safeKey(k string) string {
	if !utf8.ValidString(k) || len(k) > 64 {
		return "?"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, k)
}

// Action checks an enum value.
func Action(field string, a bootapiv1.Action) error {
	if _, ok := bootapiv1.Action_name[int32(a)]; !ok {
		return apierr.Field(field, "unknown action %d", a)
	}
	return nil
}

// Machine checks a machine record (mac already normalized by the caller).
func Machine(m *bootapiv1.Machine) error {
	if err := Site("machine.site", m.GetSite()); err != nil {
		return err
	}
	if err := Hostname("machine.hostname", m.GetHostname()); err != nil {
		return err
	}
	if err := Labels("machine.labels", m.GetLabels()); err != nil {
		return err
	}
	if err := Action("machine.default_action", m.GetDefaultAction()); err != nil {
		return err
	}
	if m.GetDefaultAction() == bootapiv1.Action_ACTION_PROFILE && m.GetDefaultProfile() == "" {
		return apierr.Field("machine.default_profile", "required when default_action is ACTION_PROFILE")
	}
	if m.GetDefaultProfile() != "" {
		if err := Name("machine.default_profile", m.GetDefaultProfile()); err != nil {
			return err
		}
	}
	if a := m.GetIpv4Address(); a != "" {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is4() {
			return apierr.Field("machine.ipv4_address", "%q is not an IPv4 address", a)
		}
	}
	if bf := m.GetBootFile(); bf != "" {
		if err := BootFile("machine.boot_file", bf); err != nil {
			return err
		}
	}
	return nil
}

// BootFile checks a boot file name or http(s) URL.
func BootFile(field, s string) error {
	if strings.Contains(s, "://") {
		return httpURL(field, s)
	}
	if len(s) > 127 || !artifactRE.MatchString(s) || strings.Contains(s, "..") {
		return apierr.Field(field, "%q: want a file name of letters, digits, '.', '_', '-' and '/' or an http(s) URL", s)
	}
	return nil
}

// ArtifactName checks an artifact name.
func ArtifactName(field, s string) error {
	if s == "" {
		return apierr.Field(field, "required")
	}
	if len(s) > 255 || !artifactRE.MatchString(s) || strings.Contains(s, "..") {
		return apierr.Field(field, "%q: want letters, digits, '.', '_', '-' and '/' (no '..')", s)
	}
	return nil
}

func httpURL(field, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return apierr.Field(field, "%q: want an absolute http or https URL", s)
	}
	if len(s) > 2048 {
		return apierr.Field(field, "URL longer than 2048 characters")
	}
	return nil
}

// BaseURL checks an optional base URL (a site's bootapi or artifactstore).
func BaseURL(field, s string) error {
	if s == "" {
		return nil
	}
	return httpURL(field, s)
}

// ArtifactRef checks a profile's artifact reference: a name, or a name pinned to
// its content, "name@sha256:<64 lower-case hex digits>".
func ArtifactRef(field, s string) error {
	if s == "" {
		return apierr.Field(field, "required")
	}
	r, err := artifactref.Parse(s)
	if err != nil {
		return apierr.Field(field, "%v", err)
	}
	return ArtifactName(field, r.Name)
}

// Ref checks an artifact reference.
func Ref(field string, r *bootapiv1.ArtifactRef, required bool) error {
	switch src := r.GetSource().(type) {
	case *bootapiv1.ArtifactRef_Artifact:
		return ArtifactRef(field+".artifact", src.Artifact)
	case *bootapiv1.ArtifactRef_Url:
		return httpURL(field+".url", src.Url)
	}
	if required {
		return apierr.Field(field, "required: an artifact name or a URL")
	}
	return nil
}

// Profile checks a profile; the command line template is checked by the caller,
// which can render it.
func Profile(p *bootapiv1.Profile) error {
	if err := Name("profile.name", p.GetName()); err != nil {
		return err
	}
	if err := Ref("profile.kernel", p.GetKernel(), true); err != nil {
		return err
	}
	if len(p.GetInitrds()) > 16 {
		return apierr.Field("profile.initrds", "more than 16 initrds")
	}
	for i, r := range p.GetInitrds() {
		if err := Ref(fieldIndex("profile.initrds", i), r, true); err != nil {
			return err
		}
	}
	if len(p.GetCmdline()) > MaxCmdline {
		return apierr.Field("profile.cmdline", "longer than %d bytes", MaxCmdline)
	}
	if err := Text("profile.description", p.GetDescription(), 200); err != nil {
		return err
	}
	return Labels("profile.labels", p.GetLabels())
}

// Text checks free text that may be shown in a menu.
func Text(field, s string, max int) error {
	if len(s) > max {
		return apierr.Field(field, "longer than %d bytes", max)
	}
	if s == "" {
		return nil
	}
	if _, err := ipxe.Text(s).String(); err != nil {
		return apierr.Field(field, "%v", err)
	}
	return nil
}

// SiteRecord checks a site.
func SiteRecord(s *bootapiv1.Site) error {
	if s.GetName() == "" {
		return apierr.Field("site.name", "required")
	}
	if err := Site("site.name", s.GetName()); err != nil {
		return err
	}
	if err := Action("site.default_action", s.GetDefaultAction()); err != nil {
		return err
	}
	if s.GetDefaultAction() == bootapiv1.Action_ACTION_PROFILE && s.GetDefaultProfile() == "" {
		return apierr.Field("site.default_profile", "required when default_action is ACTION_PROFILE")
	}
	if s.GetDefaultProfile() != "" {
		if err := Name("site.default_profile", s.GetDefaultProfile()); err != nil {
			return err
		}
	}
	if err := BaseURL("site.bootapi_url", s.GetBootapiUrl()); err != nil {
		return err
	}
	if err := BaseURL("site.artifact_url", s.GetArtifactUrl()); err != nil {
		return err
	}
	if err := BaseURL("site.callback_url", s.GetCallbackUrl()); err != nil {
		return err
	}
	if t := s.GetTftpServer(); t != "" {
		if _, err := netip.ParseAddr(t); err != nil {
			return apierr.Field("site.tftp_server", "%q is not an IP address", t)
		}
	}
	if _, ok := bootapiv1.DiscoveryPolicy_name[int32(s.GetDiscoveryPolicy())]; !ok {
		return apierr.Field("site.discovery_policy", "unknown policy %d", s.GetDiscoveryPolicy())
	}
	for _, tok := range strings.Fields(s.GetExtraCmdline()) {
		if err := ipxe.CheckWord(tok); err != nil {
			return apierr.Field("site.extra_cmdline", "%v", err)
		}
		if err := grub.CheckKernelArg(tok); err != nil {
			return apierr.Field("site.extra_cmdline", "%v", err)
		}
	}
	return nil
}

// LabelSelector parses "k=v,k2,k3=v3" into required key/values ("" value = any).
func LabelSelector(field, sel string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(sel) == "" {
		return out, nil
	}
	for _, part := range strings.Split(sel, ",") {
		part = strings.TrimSpace(part)
		k, v, _ := strings.Cut(part, "=")
		if !labelKeyRE.MatchString(k) || !labelValRE.MatchString(v) {
			return nil, apierr.Field(field, "%q: want key or key=value, comma-separated", part)
		}
		out[k] = v
	}
	return out, nil
}

// MatchLabels reports whether labels satisfy a parsed selector.
func MatchLabels(labels, sel map[string]string) bool {
	for k, v := range sel {
		got, ok := labels[k]
		if !ok || (v != "" && got != v) {
			return false
		}
	}
	return true
}

func fieldIndex(f string, i int) string { return f + "[" + strconv.Itoa(i) + "]" }

// Fact checks a fact iPXE reports (arch, platform): what the script endpoint
// keeps of one, at most 128 bytes of printable UTF-8.
func Fact(field, s string) error {
	if len(s) > 128 {
		return apierr.Field(field, "longer than 128 bytes")
	}
	if !utf8.ValidString(s) {
		return apierr.Field(field, "not UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return apierr.Field(field, "control character %q", r)
		}
	}
	return nil
}
