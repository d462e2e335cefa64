package installer

import (
	"net/url"
	"unicode/utf8"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

func validUTF8(s string) bool { return utf8.ValidString(s) }

// NewData is the data a job's files are rendered with: the machine's record,
// its site, the profile, the job, the SSH keys of the profile and the
// machine, the job's installer base URL (ending in "/") and callback URL.
func NewData(m *bootapiv1.Machine, site *bootapiv1.Site, p *bootapiv1.Profile, jobID string, base, callback *url.URL) *Data {
	d := &Data{}
	d.Machine.MAC, d.Machine.Hostname, d.Machine.Labels = m.GetMac(), m.GetHostname(), m.GetLabels()
	d.Machine.Site, d.Site.Name = site.GetName(), site.GetName()
	d.Profile.Name, d.Job.ID = p.GetName(), jobID
	d.SSHAuthorizedKeys = joinKeys(p.GetInstaller().GetSshAuthorizedKeys(), m.GetSshAuthorizedKeys())
	if base != nil {
		d.Base = base.String()
	}
	if callback != nil {
		d.Callback = callback.String()
	}
	return d
}

// Defaults: what a NoCloud seed serves for a cloud-init file the profile has
// no template of. meta-data names the instance (the job: a reinstall is a new
// instance) and its host and keys; user-data gives the keys; vendor-data is
// empty.
const (
	defaultMetaData = `instance-id: {{printf "bootchain-%s" .Job.ID}}
local-hostname: {{or .Machine.Hostname (printf "bootchain-%s" .Job.ID)}}
{{- if .SSHAuthorizedKeys}}
public-keys:
{{- range .SSHAuthorizedKeys}}
  - {{.}}
{{- end}}
{{- end}}
`
	defaultUserData = `#cloud-config
{{- if .Machine.Hostname}}
hostname: {{.Machine.Hostname}}
{{- end}}
{{- if .SSHAuthorizedKeys}}
ssh_authorized_keys:
{{- range .SSHAuthorizedKeys}}
  - {{.}}
{{- end}}
{{- end}}
`
)

// RenderFile renders the file name of profile p for d: the profile's
// template, else the default of a cloud-init file. It reports false for a
// file the profile does not have.
func RenderFile(name string, p *bootapiv1.Profile, d *Data) ([]byte, File, bool, error) {
	f, ok := FileByName(name)
	if !ok {
		return nil, File{}, false, nil
	}
	tmpl := f.Template(p.GetInstaller())
	if tmpl == "" {
		switch f.Name {
		case "meta-data":
			tmpl = defaultMetaData
		case "user-data":
			tmpl = defaultUserData
		case "vendor-data":
			return []byte{}, f, true, nil
		default:
			return nil, f, false, nil
		}
	}
	out, err := Render(f, tmpl, d)
	return out, f, true, err
}
