// Package transfer serves TFTP read requests with pin/tftp behind a gate that
// validates every request first, enforces the caps on concurrent and per-client
// transfers, and records each transfer as a "tftp" hop of the client's boot session.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/diagnose"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/services/tftpd/internal/cache"
	"github.com/bootchain/bootchain/services/tftpd/internal/request"
	"github.com/bootchain/bootchain/services/tftpd/internal/source"
	"github.com/pin/tftp/v3"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// HopName is the name of the hop every transfer records.
const HopName = "tftp"

// Config configures a Server.
type Config struct {
	// Conn is the request socket (UDP 69). Required; the Server closes it.
	Conn *net.UDPConn
	// SinglePort serves every transfer from the request port (for NAT/firewalls).
	SinglePort bool
	// MaxBlksize caps the negotiated block size (also capped by the interface MTU).
	MaxBlksize int
	// Timeout waiting for an ACK before sending again.
	Timeout time.Duration
	// Retries: sends of one packet before the transfer fails.
	Retries int
	// MaxTransfers caps concurrent transfers; MaxPerClient caps them per client IP.
	MaxTransfers, MaxPerClient int
	// Anticipate > 1 enables pin/tftp's sender window of that many blocks.
	Anticipate int
	// PerIP limits the read requests of one client IP (zero: off); requests
	// over it are dropped without an answer (an answer to a spoofed source
	// would be a reflection) and counted.
	PerIP ratelimit.Limit
	// Resolve maps a cleaned requested name to an artifact.
	Resolve func(name string) (string, bool)
	// Open opens an artifact's content.
	Open func(ctx context.Context, artifact string) (*cache.Handle, bool, error)
	// Sessions records hops; nil records spans only.
	Sessions *session.Recorder
	// MACByIP finds the machine holding an address (dhcpd's lease); may be nil.
	MACByIP func(ip string) (string, bool)
	// Tracer for transfers with no session; nil is a no-op tracer.
	Tracer trace.Tracer
	// Logger.
	Logger *slog.Logger
}

// Server is a running TFTP server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	gate *gate
	tftp *tftp.Server

	mu        sync.Mutex
	active    int
	perClient map[string]int
	pending   map[string]*xfer // admitted, not yet claimed by a handler; by key
	running   map[string]*xfer // by key
	srcs      map[string]int   // client ip:port -> transfers (single-port routing)

	count counters
	perIP *ratelimit.Limiter[netip.Addr]

	// Transfers recorded once their client's session shows up (record.finish).
	late        sync.WaitGroup
	lateN       int
	lateStopped bool
	stopLate    chan struct{}
}

type counters struct {
	started, succeeded, failed, aborted, refusedBusy, refusedAccess, notFound,
	refusedWrites, dropped, bytesSent, retransmits, cacheHits, cacheMisses, fetchFailures,
	limited, panics atomic.Int64
}

// xfer is one transfer.
type xfer struct {
	key      string
	client   *net.UDPAddr
	clientIP string
	file     string
	artifact string
	neg      request.Negotiated
	admitted time.Time
	claimed  bool
	bytes    atomic.Int64
	size     atomic.Int64
	blksize  atomic.Int64

	statsMu sync.Mutex
	stats   *tftp.TransferStats
	opts    map[string]string
	// fileArch is what the file sent is built for (diagnose.FileArch), set by
	// the transfer's goroutine when it ends.
	fileArch string
}

func key(addr *net.UDPAddr, file string) string { return addr.String() + "\x00" + file }

// New builds the server on cfg.Conn.
func New(cfg Config) (*Server, error) {
	if cfg.Conn == nil || cfg.Resolve == nil || cfg.Open == nil {
		return nil, errors.New("transfer: Conn, Resolve and Open are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.MaxBlksize < 512 {
		cfg.MaxBlksize = 512
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger,
		perClient: map[string]int{}, pending: map[string]*xfer{}, running: map[string]*xfer{}, srcs: map[string]int{},
		perIP:    ratelimit.New[netip.Addr](ratelimit.Config{Limit: cfg.PerIP}),
		stopLate: make(chan struct{}),
	}
	s.gate = newGate(s, cfg.Conn)
	ts := tftp.NewServer(s.handleRead, nil)
	ts.SetTimeout(cfg.Timeout)
	ts.SetRetries(cfg.Retries)
	// The timeout already paces retransmits; pin/tftp's default adds up to 1s of
	// random sleep on top, which only slows recovery from a lost packet.
	ts.SetBackoff(func(int) time.Duration { return 0 })
	// The gate clamps blksize to the MTU and the cap; pin/tftp must not clamp to
	// 512 because it cannot see the interface through the gate.
	ts.SetBlockSizeNegotiation(false)
	if cfg.MaxBlksize > 512 {
		ts.SetBlockSize(cfg.MaxBlksize)
	}
	ts.SetHook(hook{s})
	if cfg.SinglePort {
		ts.EnableSinglePort()
	}
	if cfg.Anticipate > 1 {
		ts.SetAnticipate(uint(cfg.Anticipate))
	}
	s.tftp = ts
	return s, nil
}

// Addr is the request port's address.
func (s *Server) Addr() *net.UDPAddr { return s.cfg.Conn.LocalAddr().(*net.UDPAddr) }

// Run serves until ctx ends, then stops taking requests and waits for the running
// transfers to end (each is bounded by Timeout x Retries per packet).
func (s *Server) Run(ctx context.Context) error {
	defer s.endLate()
	errc := make(chan error, 1)
	go func() { errc <- s.tftp.Serve(s.gate) }()
	sweep := time.NewTicker(5 * time.Second)
	defer sweep.Stop()
	for {
		select {
		case err := <-errc:
			if s.gate.closing.Load() {
				return nil
			}
			return fmt.Errorf("tftp: serve: %w", err)
		case <-sweep.C:
			s.sweep(time.Now())
		case <-ctx.Done():
			if !s.cfg.SinglePort {
				// pin/tftp closes the socket itself in single-port mode once idle.
				s.gate.closing.Store(true)
			}
			s.tftp.Shutdown()
			err := <-errc
			s.gate.Close()
			if err != nil && !s.gate.closing.Load() {
				return err
			}
			return nil
		}
	}
}

// drop counts a packet dropped by the gate.
func (s *Server) drop(src *net.UDPAddr, why string, args ...any) {
	s.count.dropped.Add(1)
	s.log.Debug("packet dropped", append([]any{"ip", src.IP.String(), "why", why}, args...)...)
}

// refuse answers a request with an error packet.
func (s *Server) refuse(src *net.UDPAddr, code uint16, msg string, c *atomic.Int64) {
	if c != nil {
		c.Add(1)
	}
	s.gate.reply(request.ErrorPacket(code, msg), src)
	s.log.Debug("request refused", "ip", src.IP.String(), "code", code, "msg", msg)
}

// panicked logs and counts a panic recovered in where; the request or transfer
// it served is dropped and the server goes on (in bootchain up a crash would
// take etcd and every other service with it).
func (s *Server) panicked(where string, p any) {
	s.count.panics.Add(1)
	s.log.Error("panic in TFTP "+where+"; dropped", "panic", p, "stack", string(debug.Stack()))
}

// limited reports whether src is over its read-request rate (and counts it).
func (s *Server) limited(src *net.UDPAddr) bool {
	ip, _ := netip.AddrFromSlice(src.IP)
	if ok, _ := s.perIP.Allow(ip.Unmap()); ok {
		return false
	}
	s.count.limited.Add(1)
	s.count.dropped.Add(1)
	return true
}

// safeAdmit is admit with a panic dropping the request, not the serve loop.
func (s *Server) safeAdmit(pkt []byte, src *net.UDPAddr, maxBlksize int) (out []byte, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.panicked("request", p)
			out, ok = nil, false
		}
	}()
	return s.admit(pkt, src, maxBlksize)
}

// admit checks a request from the request port. It answers refused requests itself
// and returns the request to hand to pin/tftp for admitted ones.
func (s *Server) admit(pkt []byte, src *net.UDPAddr, maxBlksize int) ([]byte, bool) {
	req, err := request.Parse(pkt)
	if err != nil {
		// A request that does not parse gets an error when it is one at all; a packet
		// too broken to tell is only counted.
		s.count.dropped.Add(1)
		s.gate.reply(request.ErrorPacket(request.ErrCodeIllegalOperation, "malformed request"), src)
		return nil, false
	}
	if req.Op == request.OpWRQ {
		s.refuse(src, request.ErrCodeAccessViolation, "writes are not accepted", &s.count.refusedWrites)
		return nil, false
	}
	if req.Mode == "mail" {
		s.refuse(src, request.ErrCodeIllegalOperation, "mail mode is not supported", &s.count.dropped)
		return nil, false
	}
	name, err := request.CleanPath(req.Filename)
	if err != nil {
		s.refuse(src, request.ErrCodeAccessViolation, err.Error(), &s.count.refusedAccess)
		return nil, false
	}
	artifact, ok := s.cfg.Resolve(name)
	if !ok {
		s.refuse(src, request.ErrCodeFileNotFound, "file not found", &s.count.notFound)
		s.recordNotFound(src, name)
		return nil, false
	}
	neg := req.Clamp(request.Limits{MaxBlksize: maxBlksize})
	x := &xfer{
		key: key(src, req.Filename), client: src, clientIP: src.IP.String(), file: name,
		artifact: artifact, neg: neg, admitted: time.Now(),
	}
	s.mu.Lock()
	switch {
	case s.cfg.MaxTransfers > 0 && s.active >= s.cfg.MaxTransfers:
		s.mu.Unlock()
		s.refuse(src, request.ErrCodeNotDefined, "server busy: too many transfers, try again", &s.count.refusedBusy)
		return nil, false
	case s.cfg.MaxPerClient > 0 && s.perClient[x.clientIP] >= s.cfg.MaxPerClient:
		s.mu.Unlock()
		s.refuse(src, request.ErrCodeNotDefined, "too many transfers from this client", &s.count.refusedBusy)
		return nil, false
	}
	if s.pending[x.key] != nil || (s.running[x.key] != nil && !s.running[x.key].progressed()) {
		// The client sent its request again before it heard from the transfer
		// already started (our answer was slow or lost): that transfer answers it.
		// A client that had been acknowledging and asks again from the same port
		// gave that transfer up: it gets a new one.
		s.mu.Unlock()
		return nil, false
	}
	s.active++
	s.perClient[x.clientIP]++
	s.srcs[src.String()]++
	s.pending[x.key] = x
	s.mu.Unlock()
	return req.Encode(), true
}

// isActive reports whether a transfer runs (or is admitted) for client ip:port.
func (s *Server) isActive(src string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srcs[src] > 0
}

// sweep releases admissions pin/tftp never started (it could not open a socket).
func (s *Server) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, x := range s.pending {
		if now.Sub(x.admitted) > 10*time.Second {
			delete(s.pending, k)
			s.releaseLocked(x)
		}
	}
}

func (s *Server) releaseLocked(x *xfer) {
	s.active--
	if s.perClient[x.clientIP]--; s.perClient[x.clientIP] <= 0 {
		delete(s.perClient, x.clientIP)
	}
	src := x.client.String()
	if s.srcs[src]--; s.srcs[src] <= 0 {
		delete(s.srcs, src)
	}
}

func (s *Server) claim(k string) *xfer {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.pending[k]
	if x == nil {
		return nil
	}
	delete(s.pending, k)
	x.claimed = true
	s.running[k] = x
	return x
}

func (s *Server) finish(x *xfer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[x.key] == x {
		delete(s.running, x.key)
	}
	s.releaseLocked(x)
}

// handleRead is pin/tftp's read handler: it runs in the transfer's goroutine.
func (s *Server) handleRead(filename string, rf io.ReaderFrom) (err error) {
	// Registered first, so it runs last: finish and Close below have run.
	defer func() {
		if p := recover(); p != nil {
			s.panicked("transfer", p)
			err = errors.New("internal error")
		}
	}()
	ot, ok := rf.(tftp.OutgoingTransfer)
	if !ok {
		return errors.New("internal error")
	}
	ra := ot.RemoteAddr()
	x := s.claim(key(&ra, filename))
	if x == nil {
		// Not admitted by the gate (cannot happen unless the sweep released it).
		s.count.dropped.Add(1)
		return errors.New("request expired")
	}
	defer s.finish(x)
	s.count.started.Add(1)
	log := s.log.With("ip", x.clientIP, "port", ra.Port, "file", x.file)

	rec := s.startRecord(x)
	ctx := rec.ctx
	h, hit, err := s.cfg.Open(context.WithValue(ctx, clientKey{}, x.clientIP), x.artifact)
	if hit {
		s.count.cacheHits.Add(1)
	} else {
		s.count.cacheMisses.Add(1)
	}
	if err != nil {
		s.count.failed.Add(1)
		msg, outcome := "file not found", diagnose.OutcomeNotFound
		if errors.Is(err, source.ErrNotFound) {
			s.count.notFound.Add(1)
		} else {
			s.count.fetchFailures.Add(1)
			msg, outcome = "file not available", "failed"
		}
		rec.finish(x, 0, outcome, fmt.Errorf("%s: %w", msg, err))
		log.Warn("transfer refused", "artifact", x.artifact, "err", err)
		// pin/tftp sends this as error 1 (file not found).
		return errors.New(msg)
	}
	defer h.Close()
	ot.SetSize(h.Size)
	x.size.Store(h.Size)
	x.blksize.Store(int64(x.neg.Blksize))
	s.mu.Lock()
	s.running[x.key] = x
	s.mu.Unlock()

	cr := &countingReader{r: h.Reader, n: &x.bytes}
	n, err := rf.ReadFrom(cr)
	x.fileArch = diagnose.FileArch(cr.head)
	s.count.bytesSent.Add(n)
	sent, acked := x.datagrams()
	outcome := "succeeded"
	var ne net.Error
	switch {
	case err != nil && n == h.Size && acked > 0 && errors.As(err, &ne) && ne.Timeout():
		// Every byte went out to a client that had been acknowledging, and only
		// the last ACK never came: RFC 1350's lost final ACK. The client most likely
		// has the file and has moved on; a boot session must not read this as a
		// failed boot.
		outcome, err = "final ACK not received", nil
		s.count.succeeded.Add(1)
	case err != nil:
		outcome, err = s.classify(x, err)
		s.count.failed.Add(1)
	default:
		s.count.succeeded.Add(1)
	}
	retrans := sent - acked
	if outcome != "succeeded" {
		// Not every unanswered datagram is a retransmission: lock-step has one
		// block in flight when a client goes away, a sender window several.
		// Retransmissions are what was sent beyond the distinct datagrams: the
		// OACK, each block read, and the empty block that ends a file whose size is
		// a multiple of blksize.
		blk := int64(max(x.neg.Blksize, 1))
		distinct := int((n + blk - 1) / blk)
		if x.neg.OACK {
			distinct++
		}
		if n == h.Size && n%blk == 0 {
			distinct++
		}
		retrans = max(sent-distinct, 0)
	}
	if retrans > 0 {
		s.count.retransmits.Add(int64(retrans))
	}
	rec.retransmits = retrans
	rec.finish(x, n, outcome, err)
	log.Debug("transfer ended", "artifact", x.artifact, "bytes", n, "blksize", x.neg.Blksize, "outcome", outcome, "retransmits", retrans, "err", err)
	return nil
}

type clientKey struct{}

// ClientIP is the address of the client whose transfer opens a file, for an
// Open that answers per machine (GRUB's config); "" outside a transfer.
func ClientIP(ctx context.Context) string {
	ip, _ := ctx.Value(clientKey{}).(string)
	return ip
}

// clientErr matches pin/tftp's error for an ERROR packet from the client.
var clientErr = regexp.MustCompile(`^sending block (\d+): code=(\d+), error: (.*)$`)

// ErrAborted is the error of a transfer the client abandoned.
var ErrAborted = errors.New("aborted by client")

// classify names the outcome of a failed transfer.
func (s *Server) classify(x *xfer, err error) (string, error) {
	if m := clientErr.FindStringSubmatch(err.Error()); m != nil {
		s.count.aborted.Add(1)
		block, _ := strconv.Atoi(m[1])
		msg := m[3]
		if block == 0 && x.neg.Tsize {
			// UEFI firmware asks for tsize, reads the OACK and aborts with error 8:
			// that is its size probe, and the real transfer follows.
			return "aborted by client", fmt.Errorf("%w after the tsize probe (error %s %q; normal for UEFI firmware)", ErrAborted, m[2], msg)
		}
		return "aborted by client", fmt.Errorf("%w at block %d (error %s %q)", ErrAborted, block, m[2], msg)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return diagnose.OutcomeTimedOut, fmt.Errorf("no ACK after %d sends of %s each: %w", s.cfg.Retries, s.cfg.Timeout, err)
	}
	return "failed", err
}

// progressed reports whether the client has acknowledged anything yet: with options
// pin/tftp reads block 1 only after the ACK of its OACK, without them block 2 only
// after the ACK of block 1.
func (x *xfer) progressed() bool {
	n := x.bytes.Load()
	if x.neg.Tsize || x.neg.BlksizeAsked > 0 {
		return n > 0
	}
	return n > int64(x.neg.Blksize)
}

func (x *xfer) datagrams() (sent, acked int) {
	x.statsMu.Lock()
	defer x.statsMu.Unlock()
	if x.stats == nil {
		return 0, 0
	}
	return x.stats.DatagramsSent, x.stats.DatagramsAcked
}

// countingReader counts what a transfer read and keeps the file's first bytes,
// which say what architecture the boot file is for (a hop attribute that
// diagnoses a boot file the client's firmware cannot run).
type countingReader struct {
	r    io.Reader
	n    *atomic.Int64
	head []byte
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if left := diagnose.FileArchBytes - len(c.head); left > 0 && n > 0 {
		c.head = append(c.head, p[:min(n, left)]...)
	}
	return n, err
}

// hook receives pin/tftp's per-transfer statistics.
type hook struct{ s *Server }

func (h hook) OnSuccess(st tftp.TransferStats)          { h.record(st) }
func (h hook) OnFailure(st tftp.TransferStats, _ error) { h.record(st) }

func (h hook) record(st tftp.TransferStats) {
	defer func() {
		if p := recover(); p != nil {
			h.s.panicked("transfer statistics", p)
		}
	}()
	if st.RemoteAddr == nil {
		// A request pin/tftp could not start, or the socket closing at shutdown.
		if !h.s.gate.closing.Load() {
			h.s.count.dropped.Add(1)
		}
		return
	}
	k := key(&net.UDPAddr{IP: st.RemoteAddr, Port: st.Tid}, st.Filename)
	h.s.mu.Lock()
	x := h.s.running[k]
	h.s.mu.Unlock()
	if x == nil {
		return
	}
	opts := make(map[string]string, len(st.Opts))
	for k, v := range st.Opts {
		opts[k] = v
	}
	x.statsMu.Lock()
	x.stats, x.opts = &st, opts
	x.statsMu.Unlock()
}

// Stats are the server's counters.
type Stats struct {
	Active, Started, Succeeded, Failed, Aborted, RefusedBusy, RefusedAccess, NotFound,
	RefusedWrites, Dropped, BytesSent, Retransmits, CacheHits, CacheMisses, FetchFailures int64
	// Limited are read requests dropped by the per-IP rate limit (also counted
	// in Dropped); Panics requests and transfers dropped by a recovered panic.
	Limited, Panics int64
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active := int64(s.active)
	s.mu.Unlock()
	c := &s.count
	return Stats{
		Active: active, Started: c.started.Load(), Succeeded: c.succeeded.Load(), Failed: c.failed.Load(),
		Aborted: c.aborted.Load(), RefusedBusy: c.refusedBusy.Load(), RefusedAccess: c.refusedAccess.Load(),
		NotFound: c.notFound.Load(), RefusedWrites: c.refusedWrites.Load(), Dropped: c.dropped.Load(),
		BytesSent: c.bytesSent.Load(), Retransmits: c.retransmits.Load(), CacheHits: c.cacheHits.Load(),
		CacheMisses: c.cacheMisses.Load(), FetchFailures: c.fetchFailures.Load(),
		Limited: c.limited.Load(), Panics: c.panics.Load(),
	}
}

// Active describes a running transfer.
type Active struct {
	Client, File, Artifact string
	Bytes, Size, Blksize   int64
	Start                  time.Time
}

// Running lists the running transfers, oldest first.
func (s *Server) Running() []Active {
	s.mu.Lock()
	out := make([]Active, 0, len(s.running))
	for _, x := range s.running {
		out = append(out, Active{
			Client: x.client.String(), File: x.file, Artifact: x.artifact,
			Bytes: x.bytes.Load(), Size: x.size.Load(), Blksize: x.blksize.Load(), Start: x.admitted,
		})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}
