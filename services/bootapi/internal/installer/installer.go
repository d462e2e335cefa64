// Package installer renders a profile's installer answer files (a Debian
// preseed, a kickstart, cloud-init user-data, meta-data and vendor-data, an
// Ignition config) for one machine, and checks them when a profile is written.
//
// A file is a Go text/template over Data. Every action's output goes through
// its format's escaper, added to the parsed template the way html/template
// adds its own, so no value a template substitutes can change the document's
// structure: it cannot add a preseed directive, a kickstart command, a YAML
// key or a JSON field. Check proves it for each template when it is written,
// by rendering a benign and a hostile sample and comparing the shapes of the
// two documents.
//
//	out, err := installer.Render(installer.FileByName("preseed"), p.GetInstaller().GetPreseed(), data)
package installer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/template"
	tparse "text/template/parse"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// Format is how a file's values are escaped and its shape read.
type Format int

// The formats.
const (
	Preseed Format = iota + 1
	Kickstart
	YAML
	JSON
)

func (f Format) String() string {
	switch f {
	case Preseed:
		return "preseed"
	case Kickstart:
		return "kickstart"
	case YAML:
		return "YAML"
	case JSON:
		return "JSON"
	}
	return "unknown"
}

// File is one installer file a profile can carry.
type File struct {
	// Name is the file's name in its URL (/installer/v1/<job>/<key>/<Name>).
	Name string
	// Field is the InstallerTemplates field that holds its template.
	Field string
	// Format of the file.
	Format Format
	// ContentType it is served with.
	ContentType string
	get         func(*bootapiv1.InstallerTemplates) string
}

// Template is the profile's template of the file ("" when it has none).
func (f File) Template(t *bootapiv1.InstallerTemplates) string { return f.get(t) }

// Files are the installer files, in the order bootctl shows them. The three
// cloud-init files make the job's installer URL a NoCloud seed
// (ds=nocloud;s=<url>/).
var Files = []File{
	{Name: "preseed", Field: "preseed", Format: Preseed, ContentType: "text/plain; charset=utf-8", get: (*bootapiv1.InstallerTemplates).GetPreseed},
	{Name: "kickstart", Field: "kickstart", Format: Kickstart, ContentType: "text/plain; charset=utf-8", get: (*bootapiv1.InstallerTemplates).GetKickstart},
	{Name: "user-data", Field: "user_data", Format: YAML, ContentType: "text/cloud-config; charset=utf-8", get: (*bootapiv1.InstallerTemplates).GetUserData},
	{Name: "meta-data", Field: "meta_data", Format: YAML, ContentType: "text/yaml; charset=utf-8", get: (*bootapiv1.InstallerTemplates).GetMetaData},
	{Name: "vendor-data", Field: "vendor_data", Format: YAML, ContentType: "text/yaml; charset=utf-8", get: (*bootapiv1.InstallerTemplates).GetVendorData},
	{Name: "ignition", Field: "ignition", Format: JSON, ContentType: "application/json", get: (*bootapiv1.InstallerTemplates).GetIgnition},
}

// FileByName returns the file served as name.
func FileByName(name string) (File, bool) {
	i := slices.IndexFunc(Files, func(f File) bool { return f.Name == name })
	if i < 0 {
		return File{}, false
	}
	return Files[i], true
}

// Names are the files' names.
func Names() []string {
	out := make([]string, len(Files))
	for i, f := range Files {
		out[i] = f.Name
	}
	return out
}

// Data is what a template sees. Its URL methods are the job's: the installer
// file URLs and the callback URL.
type Data struct {
	Machine struct {
		MAC, Hostname, Site string
		Labels              map[string]string
	}
	Site    struct{ Name string }
	Profile struct{ Name string }
	Job     struct{ ID string }
	// SSHAuthorizedKeys are the profile's keys, then the machine's.
	SSHAuthorizedKeys []string

	// Base is the job's installer URL, ending in "/"; Callback its report URL.
	Base, Callback string
}

// InstallerURL is the URL of the job's installer file name (an empty name:
// the NoCloud seed, ds=nocloud;s={{.InstallerURL ""}}).
func (d Data) InstallerURL(name string) string { return d.Base + name }

// CallbackURL is the job's report URL (POST state, progress, message and the
// token, as docs/bootapi.md says).
func (d Data) CallbackURL() string { return d.Callback }

// Limits of a template and of a rendered file.
const (
	MaxTemplate = 64 << 10
	MaxOutput   = 256 << 10
)

// RenderWrites bounds the writes of one render (script.CheckTemplate keeps
// rendering linear in the template and the data; this is the backstop, counted
// in work rather than time, as script.CmdlineWrites is).
var RenderWrites = 1 << 18

// ErrRender wraps every render failure.
var ErrRender = errors.New("installer file")

// escapeFunc is the name of the escaper added at the end of every action.
const escapeFunc = "bootchain_escape"

// Render renders the template of f for d.
func Render(f File, tmpl string, d *Data) ([]byte, error) {
	t, err := parse(f.Format, tmpl)
	if err != nil {
		return nil, err
	}
	buf := script.NewLimitedBuffer(MaxOutput, RenderWrites)
	if err := t.Execute(buf, d); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrRender, f.Name, err)
	}
	return buf.Bytes(), nil
}

type cacheKey struct {
	f    Format
	tmpl string
}

var (
	cacheMu sync.Mutex
	cache   = map[cacheKey]*template.Template{}
)

func parse(f Format, tmpl string) (*template.Template, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if t, ok := cache[cacheKey{f, tmpl}]; ok {
		return t, nil
	}
	if len(tmpl) > MaxTemplate {
		return nil, fmt.Errorf("%w: template longer than %d bytes", ErrRender, MaxTemplate)
	}
	funcs := template.FuncMap{"sh": shellQuote}
	t, err := template.New("installer").Option("missingkey=zero").Funcs(funcs).Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRender, err)
	}
	if err := script.CheckTemplate(t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRender, err)
	}
	// The escaper is added after the check, so a template cannot name it.
	t.Funcs(template.FuncMap{escapeFunc: escaper(f)})
	if t.Tree != nil && t.Root != nil {
		addEscaper(t.Tree, t.Root)
	}
	if len(cache) > 1024 {
		clear(cache)
	}
	cache[cacheKey{f, tmpl}] = t
	return t, nil
}

// addEscaper appends the escaper to every action that prints (one that
// declares or assigns a variable prints nothing), as html/template does.
func addEscaper(tree *tparse.Tree, n tparse.Node) {
	switch n := n.(type) {
	case *tparse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			addEscaper(tree, c)
		}
	case *tparse.ActionNode:
		if len(n.Pipe.Decl) > 0 {
			return
		}
		id := tparse.NewIdentifier(escapeFunc).SetTree(tree).SetPos(n.Pos)
		n.Pipe.Cmds = append(n.Pipe.Cmds, &tparse.CommandNode{NodeType: tparse.NodeCommand, Pos: n.Pos, Args: []tparse.Node{id}})
	case *tparse.IfNode:
		addEscaper(tree, n.List)
		addEscaper(tree, n.ElseList)
	case *tparse.RangeNode:
		addEscaper(tree, n.List)
		addEscaper(tree, n.ElseList)
	case *tparse.WithNode:
		addEscaper(tree, n.List)
		addEscaper(tree, n.ElseList)
	}
}

// text is a template value as one string: strings, numbers and booleans; a
// list or a map is the template's to range over.
func text(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case nil:
		return "", nil
	case bool, int, int32, int64, uint, uint32, uint64, float64:
		return fmt.Sprint(v), nil
	case []string:
		return "", errors.New("a list: range over it")
	case map[string]string:
		return "", errors.New("a map: range over it or index it")
	}
	return "", fmt.Errorf("a value of type %T cannot be written here", v)
}

// joinKeys is the keys of a profile and its machine, each once, the profile's
// first.
func joinKeys(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, k := range l {
			k = strings.TrimSpace(k)
			if k != "" && !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	return out
}
