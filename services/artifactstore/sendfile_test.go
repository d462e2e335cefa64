package artifactstore_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// spyListener hands out connections that record how bodies reach them.
type spyListener struct {
	net.Listener
	mu       sync.Mutex
	fromFile int64 // bytes passed to ReadFrom with an *os.File behind the reader
	other    int64 // bytes passed to ReadFrom otherwise
	// writes counts Write calls; it goes up before the write, so a client that
	// has read a response sees every write of it.
	writes atomic.Int64
}

func (l *spyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &spyConn{TCPConn: c.(*net.TCPConn), l: l}, nil
}

// spyConn is a *net.TCPConn whose ReadFrom (the sendfile path)
// records the reader's type and then does what TCPConn does.
type spyConn struct {
	*net.TCPConn
	l *spyListener
}

func (c *spyConn) Write(p []byte) (int, error) {
	c.l.writes.Add(1)
	return c.TCPConn.Write(p)
}

func (c *spyConn) ReadFrom(r io.Reader) (int64, error) {
	isFile := false
	switch v := r.(type) {
	case *os.File:
		isFile = true
	case *io.LimitedReader:
		_, isFile = v.R.(*os.File)
	}
	n, err := c.TCPConn.ReadFrom(r)
	c.l.mu.Lock()
	if isFile {
		c.l.fromFile += n
	} else {
		c.l.other += n
	}
	c.l.mu.Unlock()
	return n, err
}

// startSpied starts an artifactstore whose HTTP connections a spyListener
// watches.
func startSpied(t *testing.T) (*instance, *spyListener) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	spy := &spyListener{Listener: raw}
	return start(t, storetest.Start(t), opts{lis: spy}), spy
}

// readSyscalls is this process's count of read-like system calls (syscr in
// /proc/self/io: read, pread, readv, ... and one per sendfile call).
func readSyscalls(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "syscr: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Skip("no syscr in /proc/self/io")
	return 0
}

// TestBodiesGoOutWithSendfile checks that whole files, single ranges and the parts
// of multi-range answers reach the TCP connection as an *os.File through
// ReadFrom, the path on which Go calls sendfile(2); and, from the kernel's count of
// read system calls, that a 64 MiB download by curl is not read into user space
// (a read/write copy through 32 KiB buffers would take 2048 reads).
func TestBodiesGoOutWithSendfile(t *testing.T) {
	in, spy := startSpied(t)
	data := randBytes(t, 64<<20)
	mustUpload(t, in, "big", data)
	url := in.base + "/artifacts/big"

	resp, body := httpGet(t, url, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	httpGet(t, url, map[string]string{"Range": "bytes=1000-2000000"})
	httpGet(t, url, map[string]string{"Range": "bytes=0-99999,200000-299999"})
	spy.mu.Lock()
	// Every byte of the bodies goes through ReadFrom.
	want := int64(len(data)) + (2000000 - 1000 + 1) + 100000 + 100000
	if spy.fromFile != want || spy.other != 0 {
		t.Errorf("ReadFrom got %d bytes from files (want %d) and %d from other readers", spy.fromFile, want, spy.other)
	}
	spy.mu.Unlock()

	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	before := readSyscalls(t)
	out, err := exec.Command("curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{size_download}", url).Output()
	after := readSyscalls(t)
	if err != nil || string(out) != strconv.Itoa(len(data)) {
		t.Fatalf("curl: %q %v", out, err)
	}
	t.Logf("read system calls during a %d-byte download: %d", len(data), after-before)
	if after-before > 1024 {
		t.Errorf("%d read system calls for %d bytes: the body was copied through user space", after-before, len(data))
	}
}
