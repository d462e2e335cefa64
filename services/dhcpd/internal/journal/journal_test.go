package journal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func lease(ip, mac string) *dhcpdv1.Lease {
	return &dhcpdv1.Lease{Ip: ip, Mac: mac, State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, Site: "lab",
		ExpireTime: timestamppb.New(time.Unix(1_800_000_000, 0)), UpdateTime: timestamppb.New(time.Unix(1_799_999_000, 0))}
}

func TestJournalSurvivesReopenAndDone(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := lease("198.18.0.10", "52:54:00:00:00:01"), lease("198.18.0.11", "52:54:00:00:00:02"), lease("198.18.0.12", "52:54:00:00:00:03")
	var seqs []uint64
	for _, l := range []*dhcpdv1.Lease{a, b, c} {
		s, err := j.Append(l)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s)
	}
	if err := j.Done(seqs[1]); err != nil {
		t.Fatal(err)
	}
	j.Close()
	// A crash in the middle of an append leaves a torn last line.
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("4 0badc0de QUJD")
	f.Close()

	j, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Damaged() != 1 {
		t.Errorf("damaged = %d, want 1 (the torn line)", j.Damaged())
	}
	got := j.Pending()
	want := []Record{{Seq: seqs[0], Lease: a}, {Seq: seqs[2], Lease: c}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("pending after reopen (-want +got):\n%s", diff)
	}
	// New records continue the sequence and land after the rewrite.
	s, err := j.Append(b)
	if err != nil {
		t.Fatal(err)
	}
	if s <= seqs[2] {
		t.Errorf("seq %d after reopen, want > %d", s, seqs[2])
	}
	raw, _ := os.ReadFile(filepath.Join(dir, FileName))
	recs, damaged, err := Parse(bytes.NewReader(raw))
	if err != nil || damaged != 0 || len(recs) != 3 {
		t.Errorf("file after append: %d records, %d damaged, err %v; want 3, 0, nil", len(recs), damaged, err)
	}
}

func TestParseRejectsForeignFile(t *testing.T) {
	if _, _, err := Parse(bytes.NewReader([]byte("something else\n"))); err != ErrHeader {
		t.Errorf("err = %v, want ErrHeader", err)
	}
}

func TestParseSkipsDamagedLines(t *testing.T) {
	good, _ := encode(7, lease("198.18.0.10", "52:54:00:00:00:01"))
	flipped := bytes.Clone(good)
	flipped[len(flipped)-3] ^= 1
	long := append(bytes.Repeat([]byte("x"), maxLine+10), '\n')
	in := bytes.Join([][]byte{[]byte(Header + "\n"), flipped, long, []byte("1 2 3\n"), good, good}, nil)
	recs, damaged, err := Parse(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Seq != 7 || damaged != 4 {
		t.Errorf("got %d records (first seq %v), %d damaged; want 1 (seq 7), 4 (bad crc, long, garbage, repeated seq)", len(recs), recs, damaged)
	}
}

// FuzzParseJournal: any bytes parse without panicking, and every record
// parsed encodes back to a line that parses to the same record.
func FuzzParseJournal(f *testing.F) {
	good, _ := encode(1, lease("198.18.0.10", "52:54:00:00:00:01"))
	f.Add([]byte(Header + "\n"))
	f.Add(append([]byte(Header+"\n"), good...))
	f.Add(append([]byte(Header+"\n"), good[:len(good)-5]...))
	f.Add([]byte(Header + "\n1 00000000 \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, _, err := Parse(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, r := range recs {
			line, err := encode(r.Seq, r.Lease)
			if err != nil {
				t.Fatalf("record %d does not encode: %v", r.Seq, err)
			}
			again, damaged, err := Parse(bytes.NewReader(append([]byte(Header+"\n"), line...)))
			if err != nil || damaged != 0 || len(again) != 1 || again[0].Seq != r.Seq {
				t.Fatalf("record %d does not round-trip: %v %d %v", r.Seq, again, damaged, err)
			}
			if diff := cmp.Diff(r.Lease, again[0].Lease, protocmp.Transform()); diff != "" {
				t.Fatalf("record %d changed in a round trip:\n%s", r.Seq, diff)
			}
		}
	})
}
