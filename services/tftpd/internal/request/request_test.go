package request

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func pkt(op byte, parts ...string) []byte {
	b := []byte{0, op}
	for _, p := range parts {
		b = append(append(b, p...), 0)
	}
	return b
}

func TestParse(t *testing.T) {
	tests := map[string]struct {
		pkt     []byte
		want    Request
		wantErr bool
	}{
		"plain rrq":        {pkt: pkt(1, "ipxe.efi", "octet"), want: Request{Op: OpRRQ, Filename: "ipxe.efi", Mode: "octet"}},
		"mode case":        {pkt: pkt(1, "a", "OCTET"), want: Request{Op: OpRRQ, Filename: "a", Mode: "octet"}},
		"options":          {pkt: pkt(1, "a", "octet", "BLKSIZE", "1468", "tsize", "0"), want: Request{Op: OpRRQ, Filename: "a", Mode: "octet", Options: []Option{{"blksize", "1468"}, {"tsize", "0"}}}},
		"wrq":              {pkt: pkt(2, "a", "netascii"), want: Request{Op: OpWRQ, Filename: "a", Mode: "netascii"}},
		"no mode":          {pkt: pkt(1, "a"), wantErr: true},
		"unterminated":     {pkt: []byte{0, 1, 'a', 0, 'o'}, wantErr: true},
		"empty name":       {pkt: pkt(1, "", "octet"), wantErr: true},
		"odd option":       {pkt: pkt(1, "a", "octet", "blksize"), wantErr: true},
		"duplicate option": {pkt: pkt(1, "a", "octet", "tsize", "0", "TSIZE", "0"), wantErr: true},
		"empty option":     {pkt: pkt(1, "a", "octet", "", "0"), wantErr: true},
		"bad mode":         {pkt: pkt(1, "a", "binary"), wantErr: true},
		"data":             {pkt: []byte{0, 3, 0, 1}, wantErr: true},
		"short":            {pkt: []byte{0}, wantErr: true},
		"too long":         {pkt: pkt(1, string(bytes.Repeat([]byte("a"), 600)), "octet"), wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tt.pkt)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("(-want +got)\n%s", d)
			}
			if !bytes.Equal(got.Encode(), bytes.ToLower(tt.pkt)) && name != "options" {
				t.Errorf("Encode = %q, want %q", got.Encode(), tt.pkt)
			}
		})
	}
}

func TestClamp(t *testing.T) {
	tests := map[string]struct {
		opts     []Option
		max      int
		wantOpts []Option
		want     Negotiated
	}{
		"none":       {max: 1468, want: Negotiated{Blksize: 512}},
		"capped":     {opts: []Option{{"blksize", "65464"}}, max: 1468, wantOpts: []Option{{"blksize", "1468"}}, want: Negotiated{BlksizeAsked: 65464, Blksize: 1468, OACK: true}},
		"smaller":    {opts: []Option{{"blksize", "1024"}}, max: 1468, wantOpts: []Option{{"blksize", "1024"}}, want: Negotiated{BlksizeAsked: 1024, Blksize: 1024, OACK: true}},
		"tiny":       {opts: []Option{{"blksize", "8"}}, max: 1468, want: Negotiated{BlksizeAsked: 8, Blksize: 512}},
		"garbage":    {opts: []Option{{"blksize", "x"}, {"tsize", "12"}}, max: 1468, wantOpts: []Option{{"tsize", "0"}}, want: Negotiated{Blksize: 512, Tsize: true, OACK: true}},
		"windowsize": {opts: []Option{{"windowsize", "4"}, {"timeout", "3"}, {"multicast", ""}}, max: 1468, want: Negotiated{Blksize: 512, WindowsizeAsked: 4, TimeoutAsked: 3}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := Request{Op: OpRRQ, Filename: "a", Mode: "octet", Options: tt.opts}
			got := r.Clamp(Limits{MaxBlksize: tt.max})
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("negotiated (-want +got)\n%s", d)
			}
			if d := cmp.Diff(tt.wantOpts, r.Options); d != "" {
				t.Errorf("options (-want +got)\n%s", d)
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	ok := []string{"ipxe.efi", "pxelinux.cfg/01-52-54-00-12-34-56", "a..b", "x/y.z", "ünïcode"}
	if got, err := CleanPath("/grub/grub.cfg"); err != nil || got != "grub/grub.cfg" {
		t.Errorf("CleanPath(/grub/grub.cfg) = %q, %v; want the name under the root", got, err)
	}
	bad := []string{"", "/", "//etc/passwd", "/../x", "../x", "a/../../b", "a/./b", "a//b", "a/", `a\b`, "a\x00b", "a\nb", "\xff\xfe", "..", ".", string(bytes.Repeat([]byte("a"), 300))}
	for _, n := range ok {
		if got, err := CleanPath(n); err != nil || got != n {
			t.Errorf("CleanPath(%q) = %q, %v", n, got, err)
		}
	}
	for _, n := range bad {
		if _, err := CleanPath(n); !errors.Is(err, ErrAccess) {
			t.Errorf("CleanPath(%q) = %v, want ErrAccess", n, err)
		}
	}
}

func TestErrorPacket(t *testing.T) {
	code, msg, err := ParseError(ErrorPacket(ErrCodeAccessViolation, "nope"))
	if err != nil || code != 2 || msg != "nope" {
		t.Fatalf("round trip: %d %q %v", code, msg, err)
	}
}

// FuzzParse: any packet parses or fails cleanly; what parses re-encodes to a packet
// that parses to the same request.
func FuzzParse(f *testing.F) {
	f.Add(pkt(1, "ipxe.efi", "octet", "blksize", "1468", "tsize", "0"))
	f.Add(pkt(2, "a", "netascii"))
	f.Add([]byte{0, 1, 0, 0})
	f.Add([]byte{0, 5, 0, 8, 'x', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		r2, err := Parse(r.Encode())
		if err != nil {
			t.Fatalf("re-encoded request does not parse: %v", err)
		}
		if d := cmp.Diff(r, r2); d != "" {
			t.Fatalf("round trip (-first +second)\n%s", d)
		}
		r.Clamp(Limits{MaxBlksize: 1468})
		if v, ok := r.Option("blksize"); ok && (len(v) == 0 || len(v) > 4) {
			t.Fatalf("clamped blksize %q", v)
		}
	})
}

// FuzzResolvePath: CleanPath never lets a traversal, an absolute path (one
// leading '/' is the root and dropped), a backslash or a control character
// through.
func FuzzResolvePath(f *testing.F) {
	for _, s := range []string{"ipxe.efi", "../etc/passwd", "/abs", `a\b`, "a\x00", "pxelinux.cfg/01-aa", "a/./b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := CleanPath(name)
		if err != nil {
			return
		}
		if got != name && "/"+got != name {
			t.Fatalf("cleaned %q to %q", name, got)
		}
		for _, part := range bytes.Split([]byte(got), []byte("/")) {
			if len(part) == 0 || string(part) == "." || string(part) == ".." {
				t.Fatalf("accepted %q", name)
			}
		}
		if bytes.ContainsAny([]byte(got), "\\\x00") || got[0] == '/' {
			t.Fatalf("accepted %q", name)
		}
	})
}
