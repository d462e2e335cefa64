package tftpd_test

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/services/tftpd"
)

// A flood of read requests from many addresses and ports, plus garbage: the caps
// hold, refused clients get an error packet, and once it is over goroutines and heap
// are back where they were.
func TestFlood(t *testing.T) {
	const (
		maxTransfers = 32
		perClient    = 8
		ips          = 8   // 127.0.0.1 .. 127.0.0.8
		socketsPerIP = 25  // source ports per IP
		rrqsPerSock  = 10  // requests per source port
		garbage      = 500 // malformed packets
	)
	e := newEnv(t, func(c *tftpd.Config) {
		c.MaxTransfers, c.MaxPerClient = maxTransfers, perClient
		c.Timeout, c.Retries = 50*time.Millisecond, 2
	})
	efi, snp := randomBytes(t, 100_000), randomBytes(t, 10_000)
	e.arts.Put("ipxe.efi", efi)
	e.arts.Put("snponly.efi", snp)
	mustGet(t, e.addr(), "ipxe.efi", efi)
	mustGet(t, e.addr(), "snponly.efi", snp)

	e.stats() // the admin connection's goroutines belong to the baseline
	baseG, baseHeap := settle()
	server := e.srv.Addr()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		errPkts  int
		otherPkt int
	)
	stopPoll := make(chan struct{})
	maxActive := int64(0)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			if a := e.srv.Stats().GetActive(); a > maxActive {
				maxActive = a
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for ip := 1; ip <= ips; ip++ {
		for s := 0; s < socketsPerIP; s++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(ip))})
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				for i := 0; i < rrqsPerSock; i++ {
					file := []string{"ipxe.efi", "snponly.efi"}[i%2]
					c.WriteToUDP(rrq(1, file, "octet", "blksize", "1468", "tsize", "0"), server)
				}
				// Read answers until quiet; never ACK.
				buf := make([]byte, 2048)
				for {
					c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					n, _, err := c.ReadFromUDP(buf)
					if err != nil {
						return
					}
					mu.Lock()
					if n >= 4 && buf[1] == 5 {
						errPkts++
					} else {
						otherPkt++
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for i := 0; i < garbage; i++ {
			c.WriteToUDP([]byte(fmt.Sprintf("\x00\x09garbage %d", i)), server)
		}
	}()
	wg.Wait()
	testkit.EventuallyWithin(t, 30*time.Second, "all transfers to end", func() bool { return e.srv.Stats().GetActive() == 0 })
	close(stopPoll)
	<-pollDone

	st := e.stats()
	t.Logf("flood: max active %d, %d error packets, %d other answers; stats %v", maxActive, errPkts, otherPkt, st)
	if maxActive > maxTransfers {
		t.Errorf("max active %d > cap %d", maxActive, maxTransfers)
	}
	// The kernel may drop part of a flood before tftpd reads it (a full socket
	// buffer): what tftpd read, it accounted for.
	if st.GetRefusedBusy() == 0 || st.GetStarted() == 0 {
		t.Errorf("refused %d, started %d", st.GetRefusedBusy(), st.GetStarted())
	}
	if st.GetDropped() == 0 || st.GetDropped() > garbage {
		t.Errorf("dropped %d, sent %d garbage packets", st.GetDropped(), garbage)
	}
	if errPkts == 0 {
		t.Errorf("no refused client got an error packet")
	}

	// Back to the baseline (bounded wait: transfer goroutines end after their
	// timeouts, sockets close).
	var g int
	var heap uint64
	testkit.Poll(testkit.Wait, func() bool {
		g, heap = settle()
		return g <= baseG+3 && heap <= baseHeap+8<<20
	})
	t.Logf("goroutines %d -> %d, heap %d KiB -> %d KiB", baseG, g, baseHeap>>10, heap>>10)
	if g > baseG+3 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines %d, baseline %d:\n%s", g, baseG, buf[:runtime.Stack(buf, true)])
	}
	if heap > baseHeap+8<<20 {
		t.Errorf("heap %d KiB, baseline %d KiB", heap>>10, baseHeap>>10)
	}
	// Still serving.
	if _, _, err := get(e.addr(), "snponly.efi", 0, false); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
}

func settle() (int, uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}
