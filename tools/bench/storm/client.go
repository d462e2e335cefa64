//go:build linux

package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The client process runs inside the machines' namespace (started by the bench
// with "ip netns exec ... storm client"), so that every socket of every virtual
// machine is in that namespace without switching threads between namespaces. It
// prints one JSON result per machine on stdout.

// rootCAs are what the machines' installers trust for HTTPS (the site's CA).
var rootCAs *x509.CertPool

// clientMain is "storm client": a storm of -n machines.
func clientMain(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	iface := fs.String("iface", "", "interface of the machines' namespace")
	n := fs.Int("n", 10, "machines")
	first := fs.Int("first", 0, "index of the first machine (MACs 52:54:01:xx:xx:xx)")
	uefiShare := fs.Float64("uefi", 0.5, "share of machines with UEFI firmware (the rest BIOS)")
	spread := fs.Duration("spread", time.Second, "power-on times spread uniformly over this")
	timeout := fs.Duration("timeout", 10*time.Minute, "limit for the whole storm")
	ca := fs.String("ca", "", "CA certificate the installer trusts for https:// callbacks")
	fs.Parse(args)
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			return err
		}
		rootCAs = x509.NewCertPool()
		if !rootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificate", *ca)
		}
	}

	link, err := openDHCPLink(*iface)
	if err != nil {
		return err
	}
	defer link.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	begin := time.Now()
	nUEFI := int(float64(*n)**uefiShare + 0.5)
	for i := 0; i < *n; i++ {
		// UEFI machines spread evenly among the BIOS ones.
		uefi := nUEFI > 0 && (i*nUEFI)/(*n) != ((i+1)*nUEFI)/(*n)
		m := newMachine(*first+i, uefi, link)
		delay := time.Duration(rand.Int64N(int64(*spread) + 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			err := m.run(ctx)
			r := result{MAC: m.mac.String(), UEFI: m.uefi, OK: err == nil, Start: m.start.Sub(begin).Seconds(),
				Total: time.Since(m.start).Seconds(), Bytes: m.bytes, Hops: map[string]float64{}, Resent: m.resent}
			for h, d := range m.hopDone {
				r.Hops[h] = d.Seconds()
			}
			if err != nil {
				r.FailedHop, r.Err = m.failedHop, err.Error()
			}
			mu.Lock()
			enc.Encode(r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if d, err := link.drops(); err != nil || d > 0 {
		return fmt.Errorf("DHCP replies dropped by the storm's own socket: %d (%v)", d, err)
	}
	return nil
}

// blastMain is "storm blast": the raw capacity of the path, -conns TCP
// connections from addresses of the machines' range reading what the server
// sends (sendfile of the initrd, over and over) for -duration, with the same
// read loop as the machines' downloads. It prints the bytes per second.
func blastMain(args []string) error {
	fs := flag.NewFlagSet("blast", flag.ExitOnError)
	server := fs.String("server", "", "host:port of the blast server")
	from := fs.String("from", "", "first local address to connect from")
	conns := fs.Int("conns", 8, "connections")
	dur := fs.Duration("duration", 3*time.Second, "how long to read")
	fs.Parse(args)
	local, err := netip.ParseAddr(*from)
	if err != nil {
		return err
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), *dur+10*time.Second)
	defer cancel()
	start := time.Now()
	deadline := start.Add(*dur)
	errs := make(chan error, *conns)
	for i := 0; i < *conns; i++ {
		d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))}
		local = local.Next()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.DialContext(ctx, "tcp", *server)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetReadDeadline(deadline)
			bp := copyBufs.Get().(*[]byte)
			defer copyBufs.Put(bp)
			for {
				k, err := c.Read(*bp)
				total.Add(int64(k))
				if err != nil {
					if err != io.EOF && !isTimeout(err) {
						errs <- err
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	el := time.Since(start).Seconds()
	fmt.Printf("%d %f\n", total.Load(), el)
	return nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
