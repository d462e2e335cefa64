package script

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/artifactref"
	"github.com/bootchain/bootchain/pkg/artifacturl"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/ip6url"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
)

// RendererConfig configures a Renderer.
type RendererConfig struct {
	// PublicURL is bootapi's base URL as machines reach it: the menu's links and
	// a job's callback point there.
	PublicURL *url.URL
	// CallbackURL is the base URL installers report to (bootapi's HTTPS
	// listener when it has one: the installer's kernel can speak TLS, iPXE
	// cannot); default PublicURL.
	CallbackURL *url.URL
	// ArtifactURL is the artifactstore base URL for sites that set none.
	ArtifactURL string
	// MenuTimeout before the menu boots the local disk.
	MenuTimeout time.Duration
	// Profiles are the profiles the menu offers (those with menu set).
	Profiles *store.Cache[*bootapiv1.Profile]
}

// Renderer turns decisions into scripts. It has no side effects: the script
// endpoint and a preview render the same decision the same way.
type Renderer struct {
	cfg  RendererConfig
	menu menuBodies
	// host6, when valid, is bootapi's IPv6 address: every base URL with an
	// IPv4-literal host (a site's artifact and callback URLs too) is given
	// with it instead (ForIPv6).
	host6 netip.Addr
}

// NewRenderer returns a Renderer.
func NewRenderer(cfg RendererConfig) *Renderer { return &Renderer{cfg: cfg} }

// ForIPv6 is a Renderer for clients that reach bootchain over IPv6 at host:
// the same scripts with every IPv4-literal base URL rebased on host
// (pkg/ip6url), so that an IPv6-only machine can fetch what they name.
func (r *Renderer) ForIPv6(host netip.Addr) *Renderer {
	cfg := r.cfg
	cfg.PublicURL = ip6url.RebaseURL(cfg.PublicURL, host)
	cfg.CallbackURL = ip6url.RebaseURL(cfg.CallbackURL, host)
	cfg.ArtifactURL = ip6url.Rebase(cfg.ArtifactURL, host)
	return &Renderer{cfg: cfg, host6: host}
}

// Script is a rendered answer. Head goes out before Body: the menu's
// per-machine title before the body every machine shares, without joining them.
type Script struct {
	Head, Body string
	// Detail says what the script does, for the session's hop.
	Detail string
	// Final: the boot leaves bootchain here (see decide.Decision.Final).
	Final bool
}

// Len is the script's size in bytes.
func (s Script) Len() int64 { return int64(len(s.Head) + len(s.Body)) }

// Job is what a dispatched job adds to its kernel command line.
type Job struct {
	// Token is the job's bootstrap token: good for its first report only, whose
	// answer carries the token for the rest; only its hash is stored.
	Token string
	// InstallerKey is the path element of the job's installer file URLs
	// (InstallerBase); only its hash is stored.
	InstallerKey string
	// IP6 is the address the machine asked from when it asked over IPv6 (its
	// boot loader's DHCPv6 address). A renderer for IPv6 clients (ForIPv6)
	// passes it on as bootchain.ip6=, so that an installer on an IPv6-only
	// network, whose kernel has no DHCPv6 client, reports from it.
	IP6 netip.Addr
}

// Render renders d for a machine whose boot session is traceparent (empty:
// none); job is set when d dispatches its pending job. A decision that cannot
// be rendered still gets a script, one that tells the console and falls back to
// the next boot device, with the error that caused it.
func (r *Renderer) Render(d decide.Decision, traceparent string, job *Job) (Script, error) {
	mac := d.Machine.GetMac()
	switch d.Action {
	case decide.Boot:
		s, err := r.boot(d, traceparent, job)
		if err != nil {
			err = fmt.Errorf("profile %s cannot be booted: %w", d.Profile.GetName(), err)
			return Script{Body: Failure(mac, "profile "+d.Profile.GetName()+" cannot be booted"), Detail: err.Error(), Final: true}, err
		}
		return Script{Body: s, Detail: d.Detail, Final: d.Final}, nil
	case decide.LocalDisk, decide.Sanboot:
		s, err := LocalDisk(mac, d.Action == decide.Sanboot, d.Detail)
		return Script{Body: s, Detail: d.Detail, Final: true}, err
	case decide.Shell:
		s, err := Shell(mac)
		return Script{Body: s, Detail: d.Detail, Final: true}, err
	case decide.Menu:
		body, err := r.menuBody()
		var head string
		if err == nil {
			head, err = MenuHead(mac, d.Machine.GetHostname(), d.Site.GetName())
		}
		if err != nil {
			err = fmt.Errorf("menu: %w", err)
			return Script{Body: Failure(mac, "menu could not be rendered"), Detail: "menu render failed: " + err.Error(), Final: true}, err
		}
		return Script{Head: head, Body: body.script, Detail: body.detail, Final: true}, nil
	case decide.Failure:
		return Script{Body: Failure(mac, d.Message), Detail: d.Detail, Final: true}, nil
	}
	return Script{Body: Failure(mac, "bootapi cannot render this decision"), Detail: "unknown action " + d.Action.String(), Final: true},
		fmt.Errorf("decision %s: unknown action %d", d.Rule, d.Action)
}

// boot renders a kernel boot of d.Profile. A job's boot carries its callback
// URL, token and ID on the command line; every boot carries the session's
// traceparent, so the installer's hops join the boot's trace.
func (r *Renderer) boot(d decide.Decision, tp string, job *Job) (string, error) {
	m, site, p := d.Machine, d.Site, d.Profile
	kernel, err := r.resolve(site, p.GetKernel(), tp)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	bt := Boot{MAC: m.GetMac(), Hostname: m.GetHostname(), Profile: p.GetName(), Kernel: File{URL: kernel}}
	seen := map[string]bool{}
	for i, ref := range p.GetInitrds() {
		u, err := r.resolve(site, ref, tp)
		if err != nil {
			return "", fmt.Errorf("initrd %d: %w", i, err)
		}
		name := ImageName(u, i)
		if seen[name] {
			name = fmt.Sprintf("%d-%s", i, name)
		}
		seen[name] = true
		bt.Initrds = append(bt.Initrds, File{URL: u, Name: name})
	}
	if bt.Args, err = r.KernelArgs(d, tp, job); err != nil {
		return "", err
	}
	if d.Job != nil {
		bt.JobID = d.Job.GetId()
	}
	return RenderBoot(bt)
}

// KernelArgs is the kernel command line of a boot of d.Profile, split into
// checked words: the profile's template and the site's extra arguments, then,
// for a dispatched job (job set), its callback URL, token and ID (and, for an
// IPv6 client, its address: Job.IP6), then the
// session's traceparent (tp, when set). Every boot loader bootapi renders for
// (iPXE, GRUB) passes these same words.
func (r *Renderer) KernelArgs(d decide.Decision, tp string, job *Job) ([]string, error) {
	m, site, p := d.Machine, d.Site, d.Profile
	var td TemplateData
	td.Machine.MAC, td.Machine.Hostname, td.Machine.Site, td.Machine.Labels = m.GetMac(), m.GetHostname(), site.GetName(), m.GetLabels()
	td.Profile.Name = p.GetName()
	if d.Job != nil {
		td.Job.ID = d.Job.GetId()
		if job != nil && job.InstallerKey != "" {
			SetInstallerBase(&td, r.InstallerBase(d.Job.GetId(), job.InstallerKey).String())
		}
	}
	args, err := Cmdline(p.GetCmdline()+" "+site.GetExtraCmdline(), td)
	if err != nil {
		return nil, err
	}
	if d.Job != nil {
		if job == nil {
			return nil, errors.New("job " + d.Job.GetId() + ": no callback token")
		}
		cb, err := r.CallbackURL(site, d.Job.GetId())
		if err != nil {
			return nil, err
		}
		args = append(args, "bootchain.callback="+cb.String(), "bootchain.token="+job.Token, "bootchain.job="+d.Job.GetId())
		if a := job.IP6.WithZone(""); r.host6.IsValid() && a.Is6() && !a.Is4In6() && !a.IsLinkLocalUnicast() {
			args = append(args, "bootchain.ip6="+a.String())
		}
	}
	if tp != "" {
		args = append(args, "bootchain.traceparent="+tp)
	}
	return args, nil
}

// CallbackURL is the URL job id's installer reports to at site.
func (r *Renderer) CallbackURL(site *bootapiv1.Site, id string) (*url.URL, error) {
	base, err := r.callbackBase(site)
	if err != nil {
		return nil, err
	}
	cb := base.JoinPath("ipxe", "v1", "report")
	cb.RawQuery = url.Values{"job": {id}}.Encode()
	return cb, nil
}

// InstallerBase is the URL of job id's installer files, ending in "/":
// on the public URL, as iPXE's requests are (an installer's first fetch,
// the preseed, is made before it has any CA to check a certificate with).
func (r *Renderer) InstallerBase(id, key string) *url.URL {
	u := r.cfg.PublicURL.JoinPath("installer", "v1", id, key)
	u.Path += "/"
	return u
}

// callbackBase is the base URL a job's installer reports to: the site's
// callback_url (a site-level load balancer or VIP), else the configured one
// (bootapi's --callback-url or HTTPS listener), else PublicURL.
func (r *Renderer) callbackBase(site *bootapiv1.Site) (*url.URL, error) {
	if s := site.GetCallbackUrl(); s != "" {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("site %s: callback_url %q is not a base URL", site.GetName(), s)
		}
		return ip6url.RebaseURL(u, r.host6), nil
	}
	if r.cfg.CallbackURL != nil {
		return r.cfg.CallbackURL, nil
	}
	return r.cfg.PublicURL, nil
}

// URLs are the kernel and initrd URLs a kernel boot of d.Profile fetches, as
// Render puts them in the script.
func (r *Renderer) URLs(d decide.Decision, traceparent string) (kernel string, initrds []string, err error) {
	k, err := r.resolve(d.Site, d.Profile.GetKernel(), traceparent)
	if err != nil {
		return "", nil, fmt.Errorf("kernel: %w", err)
	}
	for i, ref := range d.Profile.GetInitrds() {
		u, err := r.resolve(d.Site, ref, traceparent)
		if err != nil {
			return "", nil, fmt.Errorf("initrd %d: %w", i, err)
		}
		initrds = append(initrds, u.String())
	}
	return k.String(), initrds, nil
}

// resolve turns an artifact reference into the URL the machine downloads from: its
// site's artifactstore for artifact names, the URL itself otherwise.
func (r *Renderer) resolve(site *bootapiv1.Site, ref *bootapiv1.ArtifactRef, traceparent string) (*url.URL, error) {
	var raw string
	switch src := ref.GetSource().(type) {
	case *bootapiv1.ArtifactRef_Artifact:
		base := ip6url.Rebase(site.GetArtifactUrl(), r.host6)
		if base == "" {
			base = r.cfg.ArtifactURL
		}
		if base == "" {
			return nil, errors.New("no artifactstore URL for site " + site.GetName())
		}
		ar, err := artifactref.Parse(src.Artifact)
		if err != nil {
			return nil, err
		}
		raw = artifacturl.HTTPURL(base, ar.Name, traceparent)
		if ar.Pinned() {
			// artifactstore answers 409 instead of other content than the pin names.
			sep := "?"
			if strings.Contains(raw, "?") {
				sep = "&"
			}
			raw += sep + "sha256=" + ar.SHA256
		}
	case *bootapiv1.ArtifactRef_Url:
		raw = src.Url
	default:
		return nil, errors.New("empty reference")
	}
	return url.Parse(raw)
}

// ConfigURL is the script endpoint's URL as machines reach it.
func (r *Renderer) ConfigURL() *url.URL { return r.cfg.PublicURL.JoinPath("ipxe", "v1", "config") }

// menuBody is the menu's shared part rendered from the profiles at one
// revision of their cache. Its fields are set once, by menuBodies.get.
type menuBody struct {
	rev            int64
	script, detail string
}

// menuBodies keeps the menu's shared part for the profiles' current revision:
// every machine's menu has it, and rendering it lists every profile.
type menuBodies struct {
	cur atomic.Pointer[menuBody]
	mu  sync.Mutex // one render at a time after the profiles changed
}

func (r *Renderer) menuBody() (*menuBody, error) {
	rev := r.cfg.Profiles.Revision()
	if b := r.menu.cur.Load(); b != nil && b.rev == rev {
		return b, nil
	}
	r.menu.mu.Lock()
	defer r.menu.mu.Unlock()
	if b := r.menu.cur.Load(); b != nil && b.rev == rev {
		return b, nil
	}
	var items []MenuItem
	for _, it := range r.cfg.Profiles.List(func(it store.Item[*bootapiv1.Profile]) bool { return it.Value.GetMenu() }) {
		u := r.ConfigURL()
		u.RawQuery = url.Values{"profile": {it.Value.GetName()}}.Encode()
		items = append(items, MenuItem{Profile: it.Value.GetName(), Description: it.Value.GetDescription(), URL: u})
	}
	s, err := MenuBody(items, r.cfg.MenuTimeout)
	if err != nil {
		return nil, err
	}
	b := &menuBody{rev: rev, script: s, detail: fmt.Sprintf("menu (%d profiles)", len(items))}
	r.menu.cur.Store(b)
	return b, nil
}
