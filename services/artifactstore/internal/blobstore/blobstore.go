// Package blobstore keeps artifact contents on local disk, addressed by SHA-256:
// <dir>/blobs/sha256/ab/abcdef.... A blob is written to a temp file under
// <dir>/tmp while it is hashed, fsynced, renamed into place and its folder fsynced,
// so a blob path either does not exist or holds exactly the content its name says,
// whatever crashes when. Temp files left by a crash are removed by Open.
package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/bootchain/bootchain/pkg/artifactref"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Errors; compare with errors.Is.
var (
	ErrNotFound       = errors.New("blob not found")
	ErrTooLarge       = errors.New("content larger than the size limit")
	ErrDigestMismatch = errors.New("sha256 mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
	ErrDiskFull       = errors.New("disk full")
	ErrBadDigest      = errors.New("not a sha256 digest (want 64 lower-case hex digits)")
	ErrCorrupt        = errors.New("content does not match its sha256")
)

// Store is a content-addressed folder of blobs.
type Store struct {
	dir     string
	maxSize int64
	// verified holds the digests whose content was hashed since this process
	// started (written here, or checked with Check): a disk can rot or be edited
	// while artifactstore is down, so nothing read from disk is trusted before.
	verified sync.Map
	// mem holds the bytes of small verified blobs (memory.go).
	mem memory
}

// Open prepares dir (creating its folders) and removes temp files a crashed upload
// left behind. maxSize bounds every blob (0: no bound).
func Open(dir string, maxSize int64, log *slog.Logger) (*Store, error) {
	s := &Store{dir: dir, maxSize: maxSize}
	for _, d := range []string{s.blobDir(), s.tmpDir(), s.quarantineDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(s.tmpDir(), e.Name())
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("blobstore: remove orphaned temp file: %w", err)
		}
		if log != nil {
			log.Info("removed temp file of an interrupted upload", "path", p)
		}
	}
	return s, nil
}

func (s *Store) blobDir() string { return filepath.Join(s.dir, "blobs", "sha256") }
func (s *Store) tmpDir() string  { return filepath.Join(s.dir, "tmp") }

func (s *Store) quarantineDir() string { return filepath.Join(s.dir, "quarantine") }

// QuarantineDir is where blobs that failed their sha256 check are moved.
func (s *Store) QuarantineDir() string { return s.quarantineDir() }

// ValidDigest reports whether d is 64 lower-case hex digits: the digests that
// name blobs are the ones profiles pin.
func ValidDigest(d string) bool { return artifactref.ValidDigest(d) }

// Path is where the blob with digest d lives (whether or not it exists).
func (s *Store) Path(d string) (string, error) {
	if !ValidDigest(d) {
		return "", fmt.Errorf("%w: %q", ErrBadDigest, d)
	}
	return filepath.Join(s.blobDir(), d[:2], d), nil
}

// Has reports whether the blob with digest d is on disk.
func (s *Store) Has(d string) bool {
	p, err := s.Path(d)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Open opens the blob with digest d for reading.
func (s *Store) Open(d string) (*os.File, error) {
	p, err := s.Path(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	return f, nil
}

// Remove deletes the blob with digest d; a missing blob is not an error. Readers
// that have it open keep reading it.
func (s *Store) Remove(d string) error {
	p, err := s.Path(d)
	if err != nil {
		return err
	}
	s.verified.Delete(d)
	s.forget(d)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: %w", err)
	}
	return nil
}

// Verified reports whether the blob with digest d was written or checked since
// the store was opened.
func (s *Store) Verified(d string) bool {
	_, ok := s.verified.Load(d)
	return ok
}

// Check hashes f, the open blob with digest d, and compares. limit, when set, is
// called with each chunk's size before it is read (to bound the I/O rate). A match
// marks d verified; a mismatch is ErrCorrupt (the caller quarantines it). f's
// offset is not moved.
func (s *Store) Check(f *os.File, d string, limit func(n int) error) error {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		if limit != nil {
			if err := limit(len(buf)); err != nil {
				return err
			}
		}
		n, err := f.ReadAt(buf, off)
		h.Write(buf[:n])
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("blobstore: check %s: %w", d, err)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d {
		return fmt.Errorf("%w: blob %s on disk hashes to %s", ErrCorrupt, d, got)
	}
	s.verified.Store(d, struct{}{})
	return nil
}

// Quarantine moves the blob with digest d aside, to quarantine/<d>.<unix nanos>,
// and returns the new path. The rename is atomic and both folders are synced, so
// after a crash the blob is either still in place (and checked again) or aside.
func (s *Store) Quarantine(d string) (string, error) {
	p, err := s.Path(d)
	if err != nil {
		return "", err
	}
	s.verified.Delete(d)
	s.forget(d)
	dst := filepath.Join(s.quarantineDir(), d+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := os.Rename(p, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: %s", ErrNotFound, d)
		}
		return "", fmt.Errorf("blobstore: quarantine %s: %w", d, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return dst, fmt.Errorf("blobstore: quarantine %s: %w", d, err)
	}
	if err := syncDir(s.quarantineDir()); err != nil {
		return dst, fmt.Errorf("blobstore: quarantine %s: %w", d, err)
	}
	return dst, nil
}

// Digests lists the blobs on disk.
func (s *Store) Digests() ([]string, error) {
	var out []string
	err := filepath.WalkDir(s.blobDir(), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() && ValidDigest(e.Name()) {
			out = append(out, e.Name())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobstore: list blobs: %w", err)
	}
	return out, nil
}

// TempFiles lists the temp files of uploads in progress (for tests and metrics).
func (s *Store) TempFiles() ([]string, error) {
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(s.tmpDir(), e.Name()))
	}
	return out, nil
}

// Writer receives one blob. Write the content, then Commit or Abort; Abort after
// Commit does nothing, so `defer w.Abort()` is the usual pattern.
type Writer struct {
	s    *Store
	f    *os.File
	h    hash.Hash
	n    int64
	done bool
}

// Create starts a new blob in a temp file.
func (s *Store) Create() (*Writer, error) {
	f, err := os.CreateTemp(s.tmpDir(), "upload-*")
	if err != nil {
		return nil, diskErr("create temp file", err)
	}
	return &Writer{s: s, f: f, h: sha256.New()}, nil
}

// Size is how many bytes were written so far.
func (w *Writer) Size() int64 { return w.n }

// Write appends p, hashing it. It fails with ErrTooLarge past the store's limit
// and ErrDiskFull when the disk is full; the caller then Aborts.
func (w *Writer) Write(p []byte) (int, error) {
	if w.s.maxSize > 0 && w.n+int64(len(p)) > w.s.maxSize {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, w.s.maxSize)
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, diskErr("write temp file", err)
	}
	return n, nil
}

// Commit checks the content against wantDigest and wantSize (each optional: "" and
// -1 skip the check), makes it durable and moves it into place. It returns the
// digest. On error nothing is left behind.
func (w *Writer) Commit(wantDigest string, wantSize int64) (string, error) {
	if w.done {
		return "", errors.New("blobstore: commit after commit or abort")
	}
	d := hex.EncodeToString(w.h.Sum(nil))
	if wantSize >= 0 && w.n != wantSize {
		w.Abort()
		return "", fmt.Errorf("%w: got %d bytes, want %d", ErrSizeMismatch, w.n, wantSize)
	}
	if wantDigest != "" && d != wantDigest {
		w.Abort()
		return "", fmt.Errorf("%w: content has %s, want %s", ErrDigestMismatch, d, wantDigest)
	}
	if err := w.f.Sync(); err != nil {
		w.Abort()
		return "", diskErr("fsync temp file", err)
	}
	if err := w.f.Close(); err != nil {
		w.Abort()
		return "", diskErr("close temp file", err)
	}
	dst, _ := w.s.Path(d)
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		w.Abort()
		return "", diskErr("create blob folder", err)
	}
	if err := os.Chmod(w.f.Name(), 0o640); err != nil {
		w.Abort()
		return "", diskErr("chmod temp file", err)
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		w.Abort()
		return "", diskErr("rename into place", err)
	}
	w.done = true
	w.s.verified.Store(d, struct{}{})
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return "", diskErr("fsync blob folder", err)
	}
	if err := syncDir(filepath.Dir(filepath.Dir(dst))); err != nil {
		return "", diskErr("fsync blob folder", err)
	}
	return d, nil
}

// Abort drops the temp file.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func diskErr(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %s: %v", ErrDiskFull, what, err)
	}
	return fmt.Errorf("blobstore: %s: %w", what, err)
}
