package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/artifactsig"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func artifactClient(g *Global) (artifactv1.ArtifactServiceClient, error) {
	cc, err := g.Conn("artifactstore")
	if err != nil {
		return nil, err
	}
	return artifactv1.NewArtifactServiceClient(cc), nil
}

func artifactsCommand(g *Global) *cobra.Command {
	return group(&cobra.Command{
		Use:     "artifacts",
		Aliases: []string{"artifact"},
		Short:   "Upload, list, show and delete artifacts (kernels, initrds, iPXE)",
		Long: `Artifacts are the files machines download while they boot: kernels, initrds,
iPXE binaries. They are stored by content (sha256) under a name; profiles name
them. Uploading under a name that holds other content replaces it only when
--replaces names the sha256 it holds now (so nobody replaces what they have not
seen), and only once the new content has arrived whole.

An artifactstore started with --signing-keys accepts only uploads signed by one
of its keys (--sign-key, or --signature from "bootctl artifacts sign" or
openssl pkeyutl).`,
	},
		artifactsListCommand(g),
		artifactsStatCommand(g),
		artifactsUploadCommand(g),
		artifactsDeleteCommand(g),
		artifactsImportIPXECommand(g),
		artifactsImportSecureBootCommand(g),
		artifactsSignCommand(g),
	)
}

// uploadOpts are upload's optional header fields.
type uploadOpts struct {
	contentType string
	replaces    string
	// signKey signs (name, sha256) with this ed25519 PKCS#8 PEM key; sigFile is a
	// signature made elsewhere.
	signKey, sigFile string
}

func artifactsUploadCommand(g *Global) *cobra.Command {
	var name string
	var o uploadOpts
	cmd := &cobra.Command{
		Use:     "upload FILE",
		Aliases: []string{"create", "update"},
		Short:   "Upload a file as an artifact (or replace an artifact's content)",
		Example: `  bootctl artifacts upload /boot/vmlinuz-6.1.0-amd64 --name debian/linux
  bootctl artifacts upload ./initrd.gz --name debian/initrd.gz
  bootctl artifacts upload ./vmlinuz --name debian/linux --replaces 4c76c660...f58
  bootctl artifacts upload ./ipxe.efi --sign-key ~/.config/bootchain/signing.key`,
		Args: argNames("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				name = filepath.Base(args[0])
			}
			if o.signKey != "" && o.sigFile != "" {
				return errors.New("--sign-key and --signature: give one")
			}
			cli, err := artifactClient(g)
			if err != nil {
				return err
			}
			resp, err := uploadFile(cmd.Context(), cli, args[0], name, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return showArtifact(g, resp.GetArtifact(), true)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "artifact name (default: the file's base name)")
	cmd.Flags().StringVar(&o.contentType, "content-type", "", "MIME type (default: from the file extension)")
	cmd.Flags().StringVar(&o.replaces, "replaces", "", "sha256 the name holds now: required to replace other content")
	cmd.Flags().StringVar(&o.signKey, "sign-key", "", "ed25519 private key (PKCS#8 PEM) to sign the upload with")
	cmd.Flags().StringVar(&o.sigFile, "signature", "", "file with the upload's signature (raw, or base64 as 'artifacts sign' prints)")
	_ = cmd.RegisterFlagCompletionFunc("name", complete(g, artifactNames))
	return withFields(cmd, map[string]string{"header.name": "--name", "name": "--name", "header.content_type": "--content-type", "header.replaces_sha256": "--replaces"})
}

func artifactsSignCommand(g *Global) *cobra.Command {
	var name, key, out string
	cmd := &cobra.Command{
		Use:   "sign FILE",
		Short: "Sign a file for upload under a name (detached ed25519 signature)",
		Long: `Sign the signing message of the name and the file's sha256,
"bootchain-artifact-v1\n<name>\n<sha256>\n", with an ed25519 private key (PKCS#8
PEM, as "openssl genpkey -algorithm ed25519" writes). Prints the signature in
base64, or writes it to --out; upload it with --signature.`,
		Example: `  bootctl artifacts sign ./ipxe.efi --name ipxe.efi --key signing.key --out ipxe.efi.sig
  bootctl artifacts upload ./ipxe.efi --signature ipxe.efi.sig`,
		Args: argNames("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				name = filepath.Base(args[0])
			}
			if key == "" {
				return errors.New("--key: required")
			}
			priv, err := artifactsig.LoadPrivateKey(key)
			if err != nil {
				return err
			}
			sum, err := fileSHA256(args[0])
			if err != nil {
				return err
			}
			sig := artifactsig.EncodeSignature(artifactsig.Sign(priv, name, sum)) + "\n"
			if out != "" {
				return os.WriteFile(out, []byte(sig), 0o644)
			}
			_, err = io.WriteString(cmd.OutOrStdout(), sig)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "artifact name the signature is for (default: the file's base name)")
	cmd.Flags().StringVar(&key, "key", "", "ed25519 private key, PKCS#8 PEM")
	cmd.Flags().StringVar(&out, "out", "", "write the signature here instead of printing it")
	return cmd
}

// uploadFile hashes the file first (so the server checks the content end to end),
// then streams it with a progress display on w.
func uploadFile(ctx context.Context, cli artifactv1.ArtifactServiceClient, path, name string, o uploadOpts, w io.Writer) (*artifactv1.UploadResponse, error) {
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
	ct := o.contentType
	if ct == "" {
		ct = mime.TypeByExtension(filepath.Ext(path))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	hdr := &artifactv1.UploadHeader{Name: name, ContentType: ct, Sha256: sum, Size: fi.Size(), ReplacesSha256: o.replaces}
	switch {
	case o.signKey != "":
		priv, err := artifactsig.LoadPrivateKey(o.signKey)
		if err != nil {
			return nil, err
		}
		hdr.Signature = artifactsig.Sign(priv, name, sum)
	case o.sigFile != "":
		raw, err := os.ReadFile(o.sigFile)
		if err != nil {
			return nil, err
		}
		if hdr.Signature, err = artifactsig.ParseSignature(raw); err != nil {
			return nil, fmt.Errorf("--signature %s: %w", o.sigFile, err)
		}
	}
	stream, err := cli.Upload(ctx)
	if err != nil {
		return nil, err
	}
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

func artifactTable(w io.Writer, as []*artifactv1.Artifact) error {
	rows := make([][]string, 0, len(as))
	for _, a := range as {
		rows = append(rows, []string{a.GetName(), humanBytes(a.GetSize()), shortSHA(a.GetSha256()), dash(a.GetContentType()), dash(a.GetOriginSite()), ts(a.GetUpdateTime())})
	}
	return writeTable(w, []string{"NAME", "SIZE", "SHA256", "TYPE", "ORIGIN", "UPDATED"}, rows)
}

func showArtifact(g *Global, a *artifactv1.Artifact, local bool) error {
	return g.show(a, func(w io.Writer) error { return artifactDetail(w, a, local) })
}

func artifactDetail(w io.Writer, a *artifactv1.Artifact, local bool) error {
	fs := []field{
		{"Name", a.GetName()},
		{"Size", fmt.Sprintf("%s (%d bytes)", humanBytes(a.GetSize()), a.GetSize())},
		{"SHA256", a.GetSha256()},
		{"Content type", dash(a.GetContentType())},
		{"Origin site", dash(a.GetOriginSite())},
		{"Held locally", yesNo(local)},
		{"Created", ts(a.GetCreateTime())},
		{"Updated", ts(a.GetUpdateTime())},
	}
	if len(a.GetSignature()) > 0 {
		by := a.GetSigningKey()
		if by == "" {
			by = "unverified (the artifactstore trusts no signing key)"
		}
		fs = append(fs, field{"Signed by", by})
	}
	return writeDetail(w, fs)
}

func artifactsListCommand(g *Global) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List artifacts",
		Example: `  bootctl artifacts list --prefix debian/`,
		Args:    argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := artifactClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.List(ctx, &artifactv1.ListRequest{Prefix: prefix})
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error { return artifactTable(w, resp.GetArtifacts()) })
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only names starting with this")
	return cmd
}

func artifactsStatCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:               "stat NAME",
		Aliases:           []string{"get", "show"},
		Short:             "Show one artifact",
		Example:           `  bootctl artifacts stat debian/linux`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, artifactNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			cli, err := artifactClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.Stat(ctx, &artifactv1.StatRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error { return artifactDetail(w, resp.GetArtifact(), resp.GetLocal()) })
		},
	}
}

func artifactsDeleteCommand(g *Global) *cobra.Command {
	var force bool
	var sum string
	cmd := &cobra.Command{
		Use:               "delete NAME",
		Aliases:           []string{"rm"},
		Short:             "Delete an artifact no profile refers to (or any, with --force and its sha256)",
		Example:           `  bootctl artifacts delete debian/initrd-old.gz` + "\n" + `  bootctl artifacts delete debian/linux --force --sha256 4c76c660...f58`,
		Args:              argNames("NAME"),
		ValidArgsFunction: firstArg(g, artifactNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			cli, err := artifactClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.Delete(ctx, &artifactv1.DeleteRequest{Name: args[0], Force: force, Sha256: sum})
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error {
				fmt.Fprintf(w, "deleted artifact %s\n", resp.GetArtifact().GetName())
				if refs := resp.GetReferencedBy(); len(refs) > 0 {
					fmt.Fprintf(w, "warning: profiles still refer to it: %s\n", strings.Join(refs, ", "))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even while profiles refer to it (needs --sha256)")
	cmd.Flags().StringVar(&sum, "sha256", "", "sha256 the artifact holds now (required with --force while profiles refer to it)")
	return withFields(cmd, map[string]string{"name": "NAME", "sha256": "--sha256"})
}

// artifactsImportIPXECommand uploads the iPXE binaries of Debian's ipxe package
// under their file names, skipping those already stored with the same content.
func artifactsImportIPXECommand(g *Global) *cobra.Command {
	var dir, prefix string
	var replace bool
	var o uploadOpts
	cmd := &cobra.Command{
		Use:   "import-ipxe",
		Short: "Upload the iPXE binaries of Debian's ipxe package",
		Long: `Upload the iPXE binaries (*.kpxe, *.efi, ...) found in --dir under their file
names, skipping those already stored with the same content. A name that holds
other content is replaced only with --replace.`,
		Example: `  bootctl artifacts import-ipxe
  bootctl artifacts import-ipxe --dir ./ipxe/bin --prefix ipxe/`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := ipxeFiles(dir)
			if err != nil {
				return err
			}
			cli, err := artifactClient(g)
			if err != nil {
				return err
			}
			var imports []importFile
			for _, fn := range files {
				imports = append(imports, importFile{path: filepath.Join(dir, fn), name: prefix + fn})
			}
			stored, err := importFiles(cmd.Context(), g, cli, imports, replace, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return g.show(&artifactv1.ListResponse{Artifacts: stored}, func(w io.Writer) error { return artifactTable(w, stored) })
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "/usr/lib/ipxe", "folder of the iPXE binaries (Debian package ipxe)")
	cmd.Flags().StringVar(&prefix, "prefix", "", "name prefix (\"ipxe/\" stores ipxe/undionly.kpxe, ...)")
	cmd.Flags().BoolVar(&replace, "replace", false, "replace names that hold other content (naming the digest each holds)")
	cmd.Flags().StringVar(&o.signKey, "sign-key", "", "ed25519 private key (PKCS#8 PEM) to sign each upload with")
	_ = cmd.MarkFlagDirname("dir")
	return cmd
}

// secureBootFiles are the Microsoft-signed path's binaries in a root where
// Debian's shim-signed and grub-efi-amd64-signed are installed or unpacked,
// with the names the firmware and shim ask for (docs/firmware.md).
var secureBootFiles = []importFile{
	{path: "usr/lib/shim/shimx64.efi.signed", name: "shimx64.efi"},
	{path: "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", name: "grubx64.efi"},
}

// artifactsImportSecureBootCommand uploads Debian's signed shim and network
// GRUB under the names of the Microsoft-signed Secure Boot path.
func artifactsImportSecureBootCommand(g *Global) *cobra.Command {
	var root string
	var replace bool
	var o uploadOpts
	cmd := &cobra.Command{
		Use:   "import-secureboot",
		Short: "Upload Debian's signed shim and GRUB for Secure Boot's Microsoft-signed path",
		Long: `Upload shimx64.efi (package shim-signed) and grubx64.efi (grubnetx64.efi.signed,
package grub-efi-amd64-signed) from --root, skipping those already stored with
the same content. Point machines at them with the site's boot file uefi-x64 or a
machine's boot_file shimx64.efi.`,
		Example: `  bootctl artifacts import-secureboot
  bootctl artifacts import-secureboot --root /`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var files []importFile
			for _, f := range secureBootFiles {
				p := filepath.Join(root, f.path)
				if _, err := os.Stat(p); err != nil {
					return fmt.Errorf("%w (scripts/install-deps.sh unpacks shim-signed and grub-efi-amd64-signed into /opt/bootchain/secureboot, or set --root)", err)
				}
				files = append(files, importFile{path: p, name: f.name})
			}
			cli, err := artifactClient(g)
			if err != nil {
				return err
			}
			stored, err := importFiles(cmd.Context(), g, cli, files, replace, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return g.show(&artifactv1.ListResponse{Artifacts: stored}, func(w io.Writer) error { return artifactTable(w, stored) })
		},
	}
	cmd.Flags().StringVar(&root, "root", "/opt/bootchain/secureboot", "root the packages are installed or unpacked in (/ when installed)")
	cmd.Flags().BoolVar(&replace, "replace", false, "replace names that hold other content (naming the digest each holds)")
	cmd.Flags().StringVar(&o.signKey, "sign-key", "", "ed25519 private key (PKCS#8 PEM) to sign each upload with")
	_ = cmd.MarkFlagDirname("root")
	return cmd
}

func ipxeFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w (install the Debian package ipxe, or set --dir)", err)
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
		return nil, fmt.Errorf("no iPXE binaries in %s", dir)
	}
	return files, nil
}

// importFile is a file to upload as the artifact name.
type importFile struct{ path, name string }

func importFiles(ctx context.Context, g *Global, cli artifactv1.ArtifactServiceClient, files []importFile, replace bool, o uploadOpts, log io.Writer) ([]*artifactv1.Artifact, error) {
	var stored []*artifactv1.Artifact
	for _, f := range files {
		path, name := f.path, f.name
		sum, err := fileSHA256(path)
		if err != nil {
			return nil, err
		}
		sctx, cancel := g.call(ctx)
		st, err := cli.Stat(sctx, &artifactv1.StatRequest{Name: name})
		cancel()
		switch {
		case err == nil && st.GetArtifact().GetSha256() == sum:
			fmt.Fprintf(log, "%s: unchanged, skipped\n", name)
			stored = append(stored, st.GetArtifact())
			continue
		case err != nil && status.Code(err) != codes.NotFound:
			return nil, err
		case err == nil && !replace:
			return nil, fmt.Errorf("%s: holds other content (sha256 %s) than %s: rerun with --replace to replace it", name, st.GetArtifact().GetSha256(), path)
		}
		fo := o
		fo.contentType = "application/octet-stream"
		fo.replaces = st.GetArtifact().GetSha256()
		resp, err := uploadFile(ctx, cli, path, name, fo, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		stored = append(stored, resp.GetArtifact())
	}
	return stored, nil
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
