package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry read back by readCPIO.
type cpioEntry struct {
	Name  string
	Mode  uint32
	Data  []byte
	Major uint32
	Minor uint32
}

// readCPIO parses a newc archive; used by the tests to check what was built.
func readCPIO(r io.Reader) ([]cpioEntry, error) {
	br := bufio.NewReader(r)
	var out []cpioEntry
	off := 0
	skip := func(n int) error {
		if rem := n % 4; rem != 0 {
			if _, err := br.Discard(4 - rem); err != nil {
				return err
			}
			off += 4 - rem
		}
		return nil
	}
	for i := 0; i < 1<<16; i++ {
		hdr := make([]byte, 110)
		if _, err := io.ReadFull(br, hdr); err != nil {
			return out, fmt.Errorf("cpio header at %d: %w", off, err)
		}
		off += 110
		if string(hdr[:6]) != "070701" {
			return out, fmt.Errorf("cpio: bad magic %q at %d", hdr[:6], off-110)
		}
		field := func(i int) uint32 {
			v, _ := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			return uint32(v)
		}
		mode, size, major, minor, namesize := field(1), field(6), field(9), field(10), field(11)
		name := make([]byte, namesize)
		if _, err := io.ReadFull(br, name); err != nil {
			return out, err
		}
		off += int(namesize)
		if err := skip(110 + int(namesize)); err != nil {
			return out, err
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return out, err
		}
		off += int(size)
		if err := skip(int(size)); err != nil {
			return out, err
		}
		n := strings.TrimRight(string(name), "\x00")
		if n == "TRAILER!!!" {
			return out, nil
		}
		out = append(out, cpioEntry{Name: n, Mode: mode, Data: data, Major: major, Minor: minor})
	}
	return out, errors.New("cpio: too many entries")
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.Dir("etc", 0o755)
	w.File("etc/a", 0o644, []byte("hello"))
	w.File("etc/empty", 0o600, nil)
	w.Symlink("etc/link", "a")
	w.CharDev("console", 0o600, 5, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not 4-aligned", buf.Len())
	}
	got, err := readCPIO(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{Name: "etc", Mode: cpioModeDir | 0o755, Data: []byte{}},
		{Name: "etc/a", Mode: cpioModeRegular | 0o644, Data: []byte("hello")},
		{Name: "etc/empty", Mode: cpioModeRegular | 0o600, Data: []byte{}},
		{Name: "etc/link", Mode: cpioModeSymlink | 0o777, Data: []byte("a")},
		{Name: "console", Mode: cpioModeChar | 0o600, Data: []byte{}, Major: 5, Minor: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries:\n got %v\nwant %v", got, want)
	}
}

func TestCPIODuplicate(t *testing.T) {
	w := newCPIOWriter(io.Discard)
	w.File("x", 0o644, nil)
	w.File("x", 0o644, nil)
	if err := w.Close(); err == nil {
		t.Error("duplicate entry accepted")
	}
}
