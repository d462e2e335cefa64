// Package script renders bootapi's iPXE scripts: the bootstrap that chains to the
// per-machine config URL, a one-shot or profile boot, the menu, local disk, the
// shell. Every value passes through pkg/ipxe, so nothing from a user, a machine
// record or a request can add a command or expand a variable.
package script

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"
	tparse "text/template/parse"
	"time"

	"github.com/bootchain/bootchain/pkg/ipxe"
)

// BootstrapParams are what /boot.ipxe asks iPXE to send to the config URL, with
// the iPXE type each is formatted as. A type applies to the setting's raw bytes:
// ${net0/mac:uristring} would percent-encode the six binary bytes of the MAC, so the
// MAC goes as hexhyp (52-54-00-12-34-56) and the UUID as a uuid; both are URL-safe.
// Text settings go as uristring (percent-encoded).
var BootstrapParams = []struct{ Key, Setting, Type string }{
	{"mac", "net0/mac", "hexhyp"}, {"arch", "buildarch", "uristring"}, {"platform", "platform", "uristring"},
	{"uuid", "uuid", "uuid"}, {"serial", "serial", "uristring"}, {"manufacturer", "manufacturer", "uristring"},
	{"product", "product", "uristring"},
}

// MACExpansion is how scripts hand iPXE's own MAC to bootapi in a URL.
const MACExpansion = "${net0/mac:hexhyp}"

// Bootstrap renders /boot.ipxe: chain to the config URL with the machine's facts
// (see BootstrapParams). The ${...} references are bootchain's own.
func Bootstrap(configURL *url.URL) (string, error) {
	var b ipxe.Builder
	b.Comment("bootchain bootstrap: ask bootapi what this machine boots")
	chain := configChain(configURL)
	b.Line("chain", ipxe.Raw("--autofree"), chain, ipxe.Raw("|| goto retry"))
	// A chained script that returns (local disk: "exit") is done; without this
	// line iPXE would fall through into the retry below and ask again.
	b.Line("exit")
	b.Label("retry")
	b.Line("echo", ipxe.Raw("bootchain: cannot reach bootapi, retrying in 5 seconds"))
	b.Line("sleep", ipxe.Raw("5"))
	b.Line("chain", ipxe.Raw("--autofree"), chain, ipxe.Raw("|| goto giveup"))
	b.Line("exit")
	b.Label("giveup")
	b.Line("echo", ipxe.Raw("bootchain: bootapi unreachable, booting the next device"))
	b.Line("exit")
	return b.Script()
}

// File is one resolved boot file.
type File struct {
	URL *url.URL
	// Name is the name iPXE gives the image (initrd=<name> on UEFI).
	Name string
}

// Boot is everything a kernel boot needs.
type Boot struct {
	MAC      string
	Hostname string
	Profile  string
	JobID    string
	Kernel   File
	Initrds  []File
	// Args are the kernel command line, already split and checked.
	Args []string
}

// RenderBoot renders a kernel + initrd boot. On failure it falls back to the next
// boot device after a pause, so a broken profile never loops a machine.
func RenderBoot(bt Boot) (string, error) {
	var b ipxe.Builder
	what := "profile " + bt.Profile
	if bt.JobID != "" {
		what = "job " + bt.JobID + ", " + what
	}
	b.Comment("bootchain: " + what + ", machine " + bt.MAC)
	who := bt.Hostname
	if who == "" {
		who = bt.MAC
	}
	b.Line("echo", ipxe.Text("bootchain: booting "+bt.Profile+" on "+who))
	args := []ipxe.Arg{ipxe.URL(bt.Kernel.URL)}
	for _, f := range bt.Initrds {
		// UEFI iPXE hands initrds to the kernel's EFI stub by name.
		args = append(args, ipxe.Word("initrd="+f.Name))
	}
	for _, a := range bt.Args {
		args = append(args, ipxe.Word(a))
	}
	b.Line("kernel", append(args, ipxe.Raw("|| goto failed"))...)
	for _, f := range bt.Initrds {
		b.Line("initrd", ipxe.Raw("--name"), ipxe.Word(f.Name), ipxe.URL(f.URL), ipxe.Raw("|| goto failed"))
	}
	b.Line("boot", ipxe.Raw("|| goto failed"))
	b.Label("failed")
	b.Line("echo", ipxe.Raw("bootchain: boot failed, booting the next device in 5 seconds"))
	b.Line("sleep", ipxe.Raw("5"))
	b.Line("exit", ipxe.Raw("1"))
	return b.Script()
}

// LocalDisk renders a script that leaves iPXE for the next boot device (exit) or
// boots the first disk (sanboot).
func LocalDisk(mac string, sanboot bool, why string) (string, error) {
	var b ipxe.Builder
	b.Comment("bootchain: machine " + mac + ": " + why)
	if sanboot {
		b.Line("sanboot", ipxe.Raw("--no-describe --drive 0x80 || exit"))
	} else {
		b.Line("exit")
	}
	return b.Script()
}

// Shell renders a script that drops to the iPXE shell.
func Shell(mac string) (string, error) {
	var b ipxe.Builder
	b.Comment("bootchain: machine " + mac + ": iPXE shell")
	b.Line("shell")
	return b.Script()
}

// MenuItem is one profile offered in the menu.
type MenuItem struct {
	Profile     string
	Description string
	// URL boots the profile; the menu adds the machine's MAC from iPXE's own
	// ${net0/mac}, so one rendered menu serves every machine.
	URL *url.URL
}

// Menu is the boot menu of a machine.
type Menu struct {
	MAC, Hostname, Site string
	Items               []MenuItem
	Timeout             time.Duration
}

// RenderMenu renders the menu: local disk (the default on timeout), the menu
// profiles, the iPXE shell, reboot.
func RenderMenu(m Menu) (string, error) {
	body, err := MenuBody(m.Items, m.Timeout)
	if err != nil {
		return "", err
	}
	head, err := MenuHead(m.MAC, m.Hostname, m.Site)
	if err != nil {
		return "", err
	}
	return head + body, nil
}

// MenuHead renders the per-machine start of the menu: its title. Every
// machine's menu starts with it, so the usual values (names of letters, digits,
// '.', '_', '-', ':') are joined directly; they are what the builder would write.
// FuzzMenuHead holds the two to the same output.
func MenuHead(mac, hostname, site string) (string, error) {
	if mac == "" || !plain(mac) || !plain(hostname) || !plain(site) {
		return menuHeadBuilt(mac, hostname, site)
	}
	title := hostname
	if title == "" {
		title = mac
	}
	if site != "" {
		title += " (site " + site + ")"
	}
	return "#!ipxe\n# bootchain: menu for " + mac + "\n:start\nmenu bootchain: " + title + "\n", nil
}

// plain reports whether s holds only characters no iPXE rule applies to.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func menuHeadBuilt(mac, hostname, site string) (string, error) {
	var b ipxe.Builder
	b.Comment("bootchain: menu for " + mac)
	title := hostname
	if title == "" {
		title = mac
	}
	if site != "" {
		title += " (site " + site + ")"
	}
	b.Label("start")
	b.Line("menu", ipxe.Text("bootchain: "+title))
	return b.Script()
}

// MenuBody renders the part of the menu every machine shares: the items and what
// they do. Callers cache it until the profiles change.
func MenuBody(items []MenuItem, timeout time.Duration) (string, error) {
	var b ipxe.Builder
	b.Line("item", ipxe.Raw("--gap --"), ipxe.Raw("Boot"))
	b.Line("item", ipxe.Raw("local"), ipxe.Raw("Boot from local disk"))
	items = append([]MenuItem(nil), items...)
	sort.Slice(items, func(i, j int) bool { return items[i].Profile < items[j].Profile })
	if len(items) > 0 {
		b.Line("item", ipxe.Raw("--gap --"), ipxe.Raw("Install"))
	}
	for _, it := range items {
		if !ipxe.IsLabel(it.Profile) {
			return "", fmt.Errorf("%w: profile name %q", ipxe.ErrUnsafe, it.Profile)
		}
		label := it.Profile
		if it.Description != "" {
			label += ": " + it.Description
		}
		b.Line("item", ipxe.Raw("p-"+it.Profile), ipxe.Text(label))
	}
	b.Line("item", ipxe.Raw("--gap --"), ipxe.Raw("Tools"))
	b.Line("item", ipxe.Raw("shell"), ipxe.Raw("iPXE shell"))
	b.Line("item", ipxe.Raw("reboot"), ipxe.Raw("Reboot"))
	ms := timeout.Milliseconds()
	if ms <= 0 {
		ms = 10000
	}
	b.Line("choose", ipxe.Raw("--default local --timeout "+strconv.FormatInt(ms, 10)+" target || goto local"))
	b.Line("goto", ipxe.Raw("${target}"))
	b.Label("local")
	b.Line("exit")
	for _, it := range items {
		b.Label("p-" + it.Profile)
		u, err := ipxe.URL(it.URL).String()
		if err != nil {
			return "", err
		}
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		b.Line("chain", ipxe.Raw("--autofree"), ipxe.Raw(u+sep+"mac="+MACExpansion), ipxe.Raw("|| goto start"))
	}
	b.Label("shell")
	b.Line("shell")
	b.Line("goto", ipxe.Raw("start"))
	b.Label("reboot")
	b.Line("reboot")
	s, err := b.Script()
	return strings.TrimPrefix(s, "#!ipxe\n"), err
}

// Failure renders a script that tells the console what went wrong and falls back
// to the next boot device.
func Failure(mac, msg string) string {
	var b ipxe.Builder
	b.Comment("bootchain: machine " + mac)
	b.Line("echo", ipxe.Text("bootchain: "+msg))
	if b.Err() != nil {
		b = ipxe.Builder{}
		b.Line("echo", ipxe.Raw("bootchain: cannot boot this machine (see bootapi's log)"))
	}
	b.Line("sleep", ipxe.Raw("5"))
	b.Line("exit", ipxe.Raw("1"))
	s, _ := b.Script()
	return s
}

// TemplateData is what a profile's cmdline template can use.
type TemplateData struct {
	Machine struct {
		MAC, Hostname, Site string
		Labels              map[string]string
	}
	Profile struct{ Name string }
	Job     struct{ ID string }
	// installer is the job's installer URL (ending in "/"): empty but for a
	// dispatched job.
	installer string
}

// SetInstallerBase sets the job's installer URL that InstallerURL extends.
func SetInstallerBase(d *TemplateData, base string) { d.installer = base }

// InstallerURL is the URL of the job's installer file name
// (url={{.InstallerURL "preseed"}}; the NoCloud seed is
// ds=nocloud;s={{.InstallerURL ""}}); empty for a boot that is not a job's.
func (d TemplateData) InstallerURL(name string) string {
	if d.installer == "" {
		return ""
	}
	return d.installer + name
}

// MaxCmdline bounds a rendered command line.
const MaxCmdline = 4096

// CmdlineWrites bounds the writes of one command line's rendering. parse
// refuses every construct that could spin without writing (see
// checkTemplate), so rendering is linear in the template and the labels; this
// is the backstop, counted at every write. It counts work, not time: a bound in
// wall-clock time failed jobs whenever the process was descheduled for a
// moment (a boot storm on a loaded machine), though the template was fine.
var CmdlineWrites = 1 << 16

var (
	tmplMu    sync.Mutex
	tmplCache = map[string]*template.Template{}
)

// ErrCmdline wraps every command line template failure.
var ErrCmdline = errors.New("cmdline")

// Cmdline renders a profile's command line template and splits it into checked
// kernel arguments.
func Cmdline(tmpl string, d TemplateData) ([]string, error) {
	// A substituted value must stay one word inside one argument: a hostname of
	// "x init=/bin/sh" must not add a kernel parameter.
	values := []string{d.Machine.MAC, d.Machine.Hostname, d.Machine.Site, d.Profile.Name, d.Job.ID}
	for k, v := range d.Machine.Labels {
		values = append(values, k, v)
	}
	for _, v := range values {
		if v == "" {
			continue
		}
		if err := ipxe.CheckWord(v); err != nil {
			return nil, fmt.Errorf("%w: template value: %v", ErrCmdline, err)
		}
	}
	t, err := parse(tmpl)
	if err != nil {
		return nil, err
	}
	buf := NewLimitedBuffer(MaxCmdline, CmdlineWrites)
	if err := t.Execute(buf, d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCmdline, err)
	}
	args := strings.Fields(buf.String())
	for _, a := range args {
		if err := ipxe.CheckWord(a); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCmdline, err)
		}
	}
	return args, nil
}

func parse(tmpl string) (*template.Template, error) {
	tmplMu.Lock()
	defer tmplMu.Unlock()
	if t, ok := tmplCache[tmpl]; ok {
		return t, nil
	}
	t, err := template.New("cmdline").Option("missingkey=zero").Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCmdline, err)
	}
	if err := checkTemplate(t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCmdline, err)
	}
	if len(tmplCache) > 1024 {
		clear(tmplCache)
	}
	tmplCache[tmpl] = t
	return t, nil
}

// LimitedBuffer is what a template renders into: it refuses a write past
// its size or past its count of writes, which ends the render.
type LimitedBuffer struct {
	bytes.Buffer
	max    int
	writes int // left
	limit  int
}

// NewLimitedBuffer is a buffer of at most max bytes, written in at most
// writes writes (work, not time: see CmdlineWrites).
func NewLimitedBuffer(max, writes int) *LimitedBuffer {
	return &LimitedBuffer{max: max, writes: writes, limit: writes}
}

func (l *LimitedBuffer) Write(p []byte) (int, error) {
	if l.Len()+len(p) > l.max {
		return 0, fmt.Errorf("longer than %d bytes", l.max)
	}
	if l.writes--; l.writes < 0 {
		return 0, fmt.Errorf("rendering made more than %d writes", l.limit)
	}
	return l.Buffer.Write(p)
}

// templateFuncs are the functions a command line template may call: the
// builtins that do bounded work on bounded input. Not call (no function
// values in the data anyway).
var templateFuncs = map[string]bool{
	"and": true, "or": true, "not": true, "eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
	"index": true, "len": true, "slice": true, "print": true, "println": true, "printf": true,
	"urlquery": true, "html": true, "js": true,
}

// builtins are text/template's own functions.
var builtins = map[string]bool{
	"and": true, "or": true, "not": true, "eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
	"index": true, "len": true, "slice": true, "print": true, "println": true, "printf": true,
	"urlquery": true, "html": true, "js": true, "call": true,
}

// allowedFunc: a builtin in templateFuncs, or a function the template's owner
// added (parse refuses names it does not know).
func allowedFunc(name string) bool { return templateFuncs[name] || !builtins[name] }

// maxPrintfWidth bounds a printf width or precision: fmt builds the whole
// padded string before the output limit sees it.
const maxPrintfWidth = 64

// checkTemplate refuses the template constructs whose time or memory is not
// bounded by the template's size and the machine's data: range over anything
// but a field of the data (range over an integer, Go 1.22, spins as long as
// it likes without writing), a range inside a range (labels^depth),
// define/template/block (templates calling each other: exponential time), and
// printf with a computed format or a large width.
func checkTemplate(t *template.Template) error { return CheckTemplate(t) }

// CheckTemplate refuses what checkTemplate refuses, for any template: the
// installer files' templates are held to the command line's bounds. A function
// the caller added to t (not one of text/template's builtins) is the caller's
// and allowed.
func CheckTemplate(t *template.Template) error {
	if n := len(t.Templates()); n > 1 {
		return errors.New("define and block are not allowed")
	}
	if t.Tree == nil || t.Root == nil {
		return nil
	}
	return checkNode(t.Root, 0)
}

func checkNode(n tparse.Node, ranges int) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *tparse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkNode(c, ranges); err != nil {
				return err
			}
		}
	case *tparse.TextNode, *tparse.CommentNode, *tparse.BreakNode, *tparse.ContinueNode:
	case *tparse.ActionNode:
		return checkPipe(n.Pipe)
	case *tparse.IfNode:
		return checkBranch(&n.BranchNode, ranges)
	case *tparse.WithNode:
		return checkBranch(&n.BranchNode, ranges)
	case *tparse.RangeNode:
		if ranges > 0 {
			return errors.New("range inside range is not allowed")
		}
		if !rangeable(n.Pipe) {
			return fmt.Errorf("range over %s: only over a field of the data (for example .Machine.Labels)", n.Pipe)
		}
		return checkBranch(&n.BranchNode, ranges+1)
	case *tparse.TemplateNode:
		return errors.New("template is not allowed")
	default:
		return fmt.Errorf("%s is not allowed", n)
	}
	return nil
}

func checkBranch(b *tparse.BranchNode, ranges int) error {
	if err := checkPipe(b.Pipe); err != nil {
		return err
	}
	if err := checkNode(b.List, ranges); err != nil {
		return err
	}
	if b.ElseList != nil {
		return checkNode(b.ElseList, ranges)
	}
	return nil
}

// rangeable: a single field of the data, as .A.B or $.A.B.
func rangeable(p *tparse.PipeNode) bool {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return false
	}
	switch a := p.Cmds[0].Args[0].(type) {
	case *tparse.FieldNode:
		return true
	case *tparse.VariableNode:
		return len(a.Ident) > 1 && a.Ident[0] == "$"
	}
	return false
}

func checkPipe(p *tparse.PipeNode) error {
	if p == nil {
		return nil
	}
	for _, c := range p.Cmds {
		for i, a := range c.Args {
			if err := checkArg(a); err != nil {
				return err
			}
			id, ok := a.(*tparse.IdentifierNode)
			if !ok || i != 0 {
				continue
			}
			if !allowedFunc(id.Ident) {
				return fmt.Errorf("function %s is not allowed", id.Ident)
			}
			if id.Ident == "printf" {
				if err := checkPrintf(c.Args[1:]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkArg(a tparse.Node) error {
	switch a := a.(type) {
	case *tparse.PipeNode:
		return checkPipe(a)
	case *tparse.ChainNode:
		return checkArg(a.Node)
	case *tparse.IdentifierNode:
		if !allowedFunc(a.Ident) {
			return fmt.Errorf("function %s is not allowed", a.Ident)
		}
	}
	return nil
}

// checkPrintf wants a literal format whose widths and precisions are small
// numbers (no '*').
func checkPrintf(args []tparse.Node) error {
	if len(args) == 0 {
		return nil
	}
	f, ok := args[0].(*tparse.StringNode)
	if !ok {
		return errors.New("printf: the format must be a string literal")
	}
	s := f.Text
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		num := 0
		for i++; i < len(s); i++ {
			c := s[i]
			if c == '*' {
				return errors.New("printf: '*' width is not allowed")
			}
			if c >= '0' && c <= '9' {
				num = num*10 + int(c-'0')
				if num > maxPrintfWidth {
					return fmt.Errorf("printf: width or precision over %d", maxPrintfWidth)
				}
				continue
			}
			if c == '.' {
				num = 0
				continue
			}
			if strings.IndexByte("+-# [", c) >= 0 || c == ']' {
				num = 0
				continue
			}
			break // the verb
		}
	}
	return nil
}

// ImageName derives the iPXE image name of a boot file from its URL path: the
// base name with anything outside [A-Za-z0-9._-] replaced.
func ImageName(u *url.URL, i int) string {
	base := path.Base(u.Path)
	out := strings.Map(func(r rune) rune {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return r
		}
		return '_'
	}, base)
	if out == "" || out == "." || out == ".." || out == "/" || out == "_" {
		out = "initrd" + strconv.Itoa(i)
	}
	if len(out) > 64 {
		out = out[:64]
	}
	return out
}
