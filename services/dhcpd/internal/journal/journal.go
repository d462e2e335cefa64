// Package journal is dhcpd's local record of the leases it renewed while etcd
// could not commit (a site cut off from the core, or an etcd without quorum).
//
// Every record is appended and fsynced before the ACK it stands for leaves, so
// a renewal a client was told about survives a crash of dhcpd. Once etcd
// commits again the records are replayed into etcd (lease.Allocator.Replay)
// and removed. The file is text, one record per line:
//
//	bootchain dhcpd journal v1
//	<seq> <crc32c of the payload, 8 hex> <payload: the Lease, protobuf, base64>
//
// A line cut short by a crash, or damaged, is skipped and counted; the records
// around it are kept.
//
//	j, err := journal.Open(dir)
//	err = j.Append(lease)        // durable on return
//	for _, r := range j.Pending() { ... replay ...; j.Done(r.Seq) }
package journal

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"google.golang.org/protobuf/proto"
)

// Header is the journal file's first line.
const Header = "bootchain dhcpd journal v1"

// FileName is the journal's name in the data directory.
const FileName = "offline-renewals.journal"

// maxLine bounds one record's line: a Lease is a few hundred bytes.
const maxLine = 64 << 10

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrHeader: the file is not a journal of this version.
var ErrHeader = errors.New("journal: not a bootchain dhcpd journal v1")

// Record is one offline renewal.
type Record struct {
	Seq   uint64
	Lease *dhcpdv1.Lease
}

// Journal is the open journal of one dhcpd.
type Journal struct {
	path string

	mu      sync.Mutex
	f       *os.File
	next    uint64
	pending map[uint64]*dhcpdv1.Lease
	// Damaged counts the lines skipped when the journal was opened.
	damaged int
}

// Open opens (or creates) the journal in dir, reading the records a previous
// run left unreplayed.
func Open(dir string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: data dir: %w", err)
	}
	j := &Journal{path: filepath.Join(dir, FileName), next: 1, pending: map[uint64]*dhcpdv1.Lease{}}
	if b, err := os.ReadFile(j.path); err == nil {
		recs, damaged, err := Parse(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("journal: %s: %w", j.path, err)
		}
		j.damaged = damaged
		for _, r := range recs {
			j.pending[r.Seq] = r.Lease
			j.next = max(j.next, r.Seq+1)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("journal: %w", err)
	}
	// Rewritten at once: a torn tail from a crash must not sit in front of the
	// next append.
	if err := j.rewriteLocked(); err != nil {
		return nil, err
	}
	return j, nil
}

// Damaged is the number of lines skipped as damaged when the journal was opened.
func (j *Journal) Damaged() int { return j.damaged }

// Append records l durably (written and fsynced) and returns its sequence number.
func (j *Journal) Append(l *dhcpdv1.Lease) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return 0, errors.New("journal: closed")
	}
	seq := j.next
	line, err := encode(seq, l)
	if err != nil {
		return 0, err
	}
	if _, err := j.f.Write(line); err != nil {
		return 0, fmt.Errorf("journal: append: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return 0, fmt.Errorf("journal: fsync: %w", err)
	}
	j.next++
	j.pending[seq] = proto.Clone(l).(*dhcpdv1.Lease)
	return seq, nil
}

// Pending returns the records not yet Done, oldest first.
func (j *Journal) Pending() []Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]Record, 0, len(j.pending))
	for seq, l := range j.pending {
		out = append(out, Record{Seq: seq, Lease: l})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Seq < out[b].Seq })
	return out
}

// Len is the number of records not yet Done.
func (j *Journal) Len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pending)
}

// Done removes the records seqs (replayed, or lost to a newer lease) and
// rewrites the file without them.
func (j *Journal) Done(seqs ...uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := len(j.pending)
	for _, s := range seqs {
		delete(j.pending, s)
	}
	if len(j.pending) == n {
		return nil
	}
	return j.rewriteLocked()
}

// rewriteLocked replaces the file with the pending records: a temporary file,
// fsynced, renamed over the journal, the directory fsynced.
func (j *Journal) rewriteLocked() error {
	var buf bytes.Buffer
	buf.WriteString(Header + "\n")
	seqs := make([]uint64, 0, len(j.pending))
	for s := range j.pending {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(a, b int) bool { return seqs[a] < seqs[b] })
	for _, s := range seqs {
		line, err := encode(s, j.pending[s])
		if err != nil {
			return err
		}
		buf.Write(line)
	}
	tmp := j.path + ".tmp"
	if err := writeSynced(tmp, buf.Bytes()); err != nil {
		return err
	}
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if d, err := os.Open(filepath.Dir(j.path)); err == nil {
		d.Sync()
		d.Close()
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	j.f = f
	return nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("journal: fsync: %w", err)
	}
	return f.Close()
}

// Close closes the file; the pending records stay in it for the next Open.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

func encode(seq uint64, l *dhcpdv1.Lease) ([]byte, error) {
	b, err := proto.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("journal: encode: %w", err)
	}
	line := make([]byte, 0, 32+base64.StdEncoding.EncodedLen(len(b)))
	line = strconv.AppendUint(line, seq, 10)
	line = append(line, ' ')
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(b, crcTable))
	line = base64.StdEncoding.AppendEncode(line, b)
	return append(line, '\n'), nil
}

// Parse reads a journal: its records, in file order, and how many lines it
// skipped as damaged (cut short, bad checksum, undecodable). Only a missing
// or wrong header, or a read error, is an error.
func Parse(r io.Reader) (recs []Record, damaged int, err error) {
	br := bufio.NewReaderSize(r, 4096)
	first, err := readLine(br)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	if string(first) != Header {
		return nil, 0, ErrHeader
	}
	seen := map[uint64]bool{}
	for {
		line, err := readLine(br)
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return recs, damaged, nil
		}
		if errors.Is(err, errLong) {
			damaged++
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		rec, ok := parseLine(line)
		if !ok || seen[rec.Seq] {
			damaged++
		} else {
			seen[rec.Seq] = true
			recs = append(recs, rec)
		}
		if err != nil {
			return recs, damaged, nil
		}
	}
}

var errLong = errors.New("journal: line too long")

// readLine returns the next line without its newline; io.EOF with the bytes
// of a last line that has none (a torn append, which then fails its checksum
// or decoding unless it was whole).
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine {
			// Skip to the end of this line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			return nil, errLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

func parseLine(line []byte) (Record, bool) {
	f := bytes.Fields(line)
	if len(f) != 3 || len(f[1]) != 8 {
		return Record{}, false
	}
	seq, err := strconv.ParseUint(string(f[0]), 10, 64)
	if err != nil || seq == 0 {
		return Record{}, false
	}
	sum, err := strconv.ParseUint(string(f[1]), 16, 32)
	if err != nil {
		return Record{}, false
	}
	b, err := base64.StdEncoding.DecodeString(string(f[2]))
	if err != nil || crc32.Checksum(b, crcTable) != uint32(sum) {
		return Record{}, false
	}
	l := &dhcpdv1.Lease{}
	if proto.Unmarshal(b, l) != nil {
		return Record{}, false
	}
	return Record{Seq: seq, Lease: l}, true
}
