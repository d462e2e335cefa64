package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func runArtifacts(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "artifacts", args, map[string]func(context.Context, *Global, []string) error{
		"upload":      artifactsUpload,
		"list":        artifactsList,
		"stat":        artifactsStat,
		"delete":      artifactsDelete,
		"import-ipxe": artifactsImportIPXE,
	})
}

func artifactClient(g *Global) (artifactv1.ArtifactServiceClient, error) {
	cc, err := g.Conn("artifactstore")
	if err != nil {
		return nil, err
	}
	return artifactv1.NewArtifactServiceClient(cc), nil
}

// parseInterleaved parses flags that may come after positional arguments
// ("upload FILE --name N").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func artifactsUpload(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("artifacts upload", flag.ContinueOnError)
	name := fs.String("name", "", "artifact name (default: the file's base name)")
	ct := fs.String("content-type", "", "MIME type (default: from the file extension, else application/octet-stream)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("artifacts upload FILE [--name NAME] [--content-type TYPE]")
	}
	if *name == "" {
		*name = filepath.Base(pos[0])
	}
	cli, err := artifactClient(g)
	if err != nil {
		return err
	}
	resp, err := uploadFile(ctx, cli, pos[0], *name, *ct, os.Stderr)
	if err != nil {
		return err
	}
	return printArtifacts(g, resp.GetArtifact())
}

// uploadFile hashes the file first (so the server checks the content end to end),
// then streams it with a progress display on w.
func uploadFile(ctx context.Context, cli artifactv1.ArtifactServiceClient, path, name, ct string, w io.Writer) (*artifactv1.UploadResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if ct == "" {
		ct = mime.TypeByExtension(filepath.Ext(path))
	}
	stream, err := cli.Upload(ctx)
	if err != nil {
		return nil, err
	}
	hdr := &artifactv1.UploadHeader{Name: name, ContentType: ct, Sha256: hex.EncodeToString(h.Sum(nil)), Size: fi.Size()}
	if err := stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Header{Header: hdr}}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, err
	}
	p := newProgress(w, name, fi.Size())
	buf := make([]byte, 1<<20)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if err := stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				break // the server ended the stream; CloseAndRecv has its status
			}
			p.add(int64(n))
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	resp, err := stream.CloseAndRecv()
	p.done(err)
	return resp, err
}

// progress shows an upload's progress: a redrawn bar on a terminal, a line every
// 10% otherwise.
type progress struct {
	w          io.Writer
	name       string
	total, n   int64
	tty        bool
	start      time.Time
	last       time.Time
	lastTenths int64
}

func newProgress(w io.Writer, name string, total int64) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, name: name, total: total, tty: tty, start: time.Now()}
}

func (p *progress) add(n int64) {
	p.n += n
	if p.tty {
		if time.Since(p.last) < 100*time.Millisecond && p.n < p.total {
			return
		}
		p.last = time.Now()
		const width = 30
		frac := 1.0
		if p.total > 0 {
			frac = float64(p.n) / float64(p.total)
		}
		bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
		fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %s/%s %s/s ", p.name, bar, frac*100, humanBytes(p.n), humanBytes(p.total), humanBytes(p.rate()))
		return
	}
	if p.total > 0 {
		if tenths := p.n * 10 / p.total; tenths > p.lastTenths {
			p.lastTenths = tenths
			fmt.Fprintf(p.w, "%s: %d%% (%s of %s)\n", p.name, tenths*10, humanBytes(p.n), humanBytes(p.total))
		}
	}
}

func (p *progress) rate() int64 {
	s := time.Since(p.start).Seconds()
	if s <= 0 {
		return 0
	}
	return int64(float64(p.n) / s)
}

func (p *progress) done(err error) {
	if p.tty {
		fmt.Fprintln(p.w)
	}
	if err == nil {
		fmt.Fprintf(p.w, "%s: uploaded %s in %s\n", p.name, humanBytes(p.n), time.Since(p.start).Round(time.Millisecond))
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func printArtifacts(g *Global, as ...*artifactv1.Artifact) error {
	if g.JSON() {
		msgs := make([]proto.Message, len(as))
		for i, a := range as {
			msgs[i] = a
		}
		return printJSON(g, msgs...)
	}
	rows := make([][]string, 0, len(as))
	for _, a := range as {
		rows = append(rows, []string{a.GetName(), strconv.FormatInt(a.GetSize(), 10), a.GetSha256()[:min(12, len(a.GetSha256()))], a.GetContentType(), a.GetOriginSite(), ts(a.GetUpdateTime())})
	}
	return printTable(g, []string{"NAME", "SIZE", "SHA256", "TYPE", "ORIGIN", "UPDATED"}, rows)
}

func artifactsList(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("artifacts list", flag.ContinueOnError)
	prefix := fs.String("prefix", "", "only names starting with this")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cli, err := artifactClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.List(ctx, &artifactv1.ListRequest{Prefix: *prefix})
	if err != nil {
		return err
	}
	if g.JSON() {
		return printJSON(g, resp)
	}
	return printArtifacts(g, resp.GetArtifacts()...)
}

func artifactsStat(ctx context.Context, g *Global, args []string) error {
	if len(args) != 1 {
		return errors.New("artifacts stat NAME")
	}
	cli, err := artifactClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.Stat(ctx, &artifactv1.StatRequest{Name: args[0]})
	if err != nil {
		return err
	}
	if g.JSON() {
		return printJSON(g, resp)
	}
	a := resp.GetArtifact()
	return printTable(g, []string{"FIELD", "VALUE"}, [][]string{
		{"name", a.GetName()}, {"sha256", a.GetSha256()}, {"size", strconv.FormatInt(a.GetSize(), 10)},
		{"content type", a.GetContentType()}, {"origin site", a.GetOriginSite()},
		{"created", ts(a.GetCreateTime())}, {"updated", ts(a.GetUpdateTime())}, {"held locally", strconv.FormatBool(resp.GetLocal())},
	})
}

func artifactsDelete(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("artifacts delete", flag.ContinueOnError)
	force := fs.Bool("force", false, "delete even while profiles refer to it")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("artifacts delete NAME [--force]")
	}
	cli, err := artifactClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.Delete(ctx, &artifactv1.DeleteRequest{Name: pos[0], Force: *force})
	if err != nil {
		return err
	}
	if g.JSON() {
		return printJSON(g, resp)
	}
	fmt.Fprintf(g.Out, "deleted %s\n", resp.GetArtifact().GetName())
	if refs := resp.GetReferencedBy(); len(refs) > 0 {
		fmt.Fprintf(g.Out, "warning: still referenced by profiles %s\n", strings.Join(refs, ", "))
	}
	return nil
}

// artifactsImportIPXE uploads the iPXE binaries of Debian's ipxe package under their
// file names, skipping those already stored with the same content.
func artifactsImportIPXE(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("artifacts import-ipxe", flag.ContinueOnError)
	dir := fs.String("dir", "/usr/lib/ipxe", "folder of the iPXE binaries (Debian package ipxe)")
	prefix := fs.String("prefix", "", "name prefix (\"ipxe/\" stores ipxe/undionly.kpxe, ...)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ents, err := os.ReadDir(*dir)
	if err != nil {
		return fmt.Errorf("%w (install the Debian package ipxe)", err)
	}
	var files []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".kpxe", ".kkpxe", ".efi", ".pxe", ".lkrn", ".iso", ".usb":
			if e.Type().IsRegular() || e.Type()&os.ModeSymlink != 0 {
				files = append(files, e.Name())
			}
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		return fmt.Errorf("no iPXE binaries in %s", *dir)
	}
	cli, err := artifactClient(g)
	if err != nil {
		return err
	}
	var stored []*artifactv1.Artifact
	for _, fn := range files {
		path := filepath.Join(*dir, fn)
		name := *prefix + fn
		sum, err := fileSHA256(path)
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, g.Timeout)
		st, err := cli.Stat(sctx, &artifactv1.StatRequest{Name: name})
		cancel()
		switch {
		case err == nil && st.GetArtifact().GetSha256() == sum:
			fmt.Fprintf(os.Stderr, "%s: unchanged, skipped\n", name)
			stored = append(stored, st.GetArtifact())
			continue
		case err != nil && status.Code(err) != codes.NotFound:
			return err
		}
		resp, err := uploadFile(ctx, cli, path, name, "application/octet-stream", os.Stderr)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		stored = append(stored, resp.GetArtifact())
	}
	return printArtifacts(g, stored...)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
