package transfer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/bootchain/bootchain/pkg/diagnose"
	"github.com/bootchain/bootchain/pkg/session"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// record is a transfer's trace: a hop of the client's boot session, or a lone span
// when no session has the client's IP.
type record struct {
	s           *Server
	ctx         context.Context
	hop         *session.Hop
	attrs       []attribute.KeyValue
	start       time.Time
	retransmits int
}

// lateWait is how long a transfer whose client has no session yet waits, after
// it ended, for the session to show up: dhcpd writes the session through etcd
// and tftpd reads it from its watch, which can trail a fast client's first
// request (a ROM asks for its boot file milliseconds after the ACK).
const lateWait = 3 * time.Second

// maxLate bounds the transfers waiting for their session at once; past it a
// transfer is recorded as a lone span at once.
const maxLate = 1024

func (s *Server) startRecord(x *xfer) *record {
	r := &record{s: s, ctx: context.Background(), start: time.Now(), attrs: []attribute.KeyValue{
		attribute.String("network.peer.address", x.clientIP),
		attribute.Int("network.peer.port", x.client.Port),
		attribute.String("network.transport", "udp"),
		attribute.String("tftp.file", x.file),
		attribute.String("tftp.artifact", x.artifact),
	}}
	if sess, ok := s.sessionOf(x.clientIP); ok {
		r.ctx, r.hop = sess.StartHopAt(r.ctx, HopName, r.start, r.attrs...)
	}
	return r
}

// sessionOf finds the active boot session of the machine at ip: through dhcpd's
// lease first, then through the address its session recorded.
func (s *Server) sessionOf(ip string) (*session.Session, bool) {
	rec := s.cfg.Sessions
	if rec == nil {
		return nil, false
	}
	if s.cfg.MACByIP != nil {
		if mac, ok := s.cfg.MACByIP(ip); ok {
			if sess, ok := rec.Join(mac); ok {
				return sess, true
			}
		}
	}
	if bs, ok := rec.FindByIP(ip); ok {
		return rec.Join(bs.GetMac())
	}
	return nil, false
}

func (r *record) finish(x *xfer, n int64, outcome string, err error) {
	x.statsMu.Lock()
	opts := x.opts
	x.statsMu.Unlock()
	kv := map[string]string{
		"tftp.file":        x.file,
		"tftp.artifact":    x.artifact,
		"tftp.bytes":       strconv.FormatInt(n, 10),
		"tftp.blksize":     strconv.Itoa(x.neg.Blksize),
		"tftp.retransmits": strconv.Itoa(r.retransmits),
		"tftp.outcome":     outcome,
	}
	if v, ok := opts["blksize"]; ok {
		kv["tftp.blksize"] = v
	}
	if x.neg.BlksizeAsked > 0 {
		kv["tftp.blksize_requested"] = strconv.Itoa(x.neg.BlksizeAsked)
	}
	if x.neg.Tsize {
		kv["tftp.tsize"] = strconv.FormatInt(x.size.Load(), 10)
	}
	if x.fileArch != "" {
		kv[diagnose.AttrFileArch] = x.fileArch
	}
	if outcome == diagnose.OutcomeTimedOut {
		// The block the client never acknowledged: where a boot file's transfer
		// stalled. (Not from the bytes read: the sender reads ahead of the
		// window.) The ACK of an OACK is block 0's.
		_, acked := x.datagrams()
		block := acked + 1
		if x.neg.OACK {
			block = acked
		}
		kv[diagnose.AttrTFTPBlock] = strconv.Itoa(block)
		err = fmt.Errorf("stalled at block %s: %w", kv[diagnose.AttrTFTPBlock], err)
	}
	if x.neg.WindowsizeAsked > 0 {
		// Asked for, not granted: pin/tftp has no RFC 7440 support.
		kv["tftp.windowsize_requested"] = strconv.Itoa(x.neg.WindowsizeAsked)
		kv["tftp.windowsize"] = "1"
	}
	detail := x.file
	if err != nil {
		detail = x.file + ": " + err.Error()
	}
	end := time.Now()
	if r.hop != nil {
		r.endHop(r.hop, x, kv, n, detail, err, end)
		return
	}
	if r.s.cfg.Sessions == nil || !r.s.lateAdd() {
		r.endSpan(kv, detail, err, end)
		return
	}
	// No session yet: wait for it in the background (the transfer is over), and
	// record the hop as it happened once it shows up.
	go func() {
		defer r.s.lateDone()
		deadline := time.NewTimer(lateWait)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if sess, ok := r.s.sessionOf(x.clientIP); ok {
				_, hop := sess.StartHopAt(context.Background(), HopName, r.start, r.attrs...)
				r.endHop(hop, x, kv, n, detail, err, end)
				return
			}
			select {
			case <-tick.C:
			case <-deadline.C:
				r.endSpan(kv, detail, err, end)
				return
			case <-r.s.stopLate:
				r.endSpan(kv, detail, err, end)
				return
			}
		}
	}()
}

func (r *record) endHop(hop *session.Hop, x *xfer, kv map[string]string, n int64, detail string, err error, end time.Time) {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		hop.SetAttr(k, kv[k])
	}
	hop.SetBytes(n)
	if err != nil {
		hop.SetDetail(x.file + ":")
		hop.Fail(err)
	} else {
		hop.SetDetail(detail)
	}
	hop.EndAt(end)
}

// endSpan records a transfer of a client with no boot session as a trace of its own.
func (r *record) endSpan(kv map[string]string, detail string, err error, end time.Time) {
	_, span := r.s.cfg.Tracer.Start(r.ctx, HopName, trace.WithNewRoot(), trace.WithTimestamp(r.start),
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(r.attrs...))
	for k, v := range kv {
		span.SetAttributes(attribute.String(k, v))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, detail)
	}
	span.End(trace.WithTimestamp(end))
}

func (s *Server) lateDone() {
	s.mu.Lock()
	s.lateN--
	s.mu.Unlock()
	s.late.Done()
}

// endLate records the transfers still waiting for their session as they are and
// waits for them: after it no hop is recorded.
func (s *Server) endLate() {
	s.mu.Lock()
	if !s.lateStopped {
		s.lateStopped = true
		close(s.stopLate)
	}
	s.mu.Unlock()
	s.late.Wait()
}

// lateAdd takes a slot for a transfer waiting for its session.
func (s *Server) lateAdd() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lateN >= maxLate || s.lateStopped {
		return false
	}
	s.lateN++
	s.late.Add(1)
	return true
}

// recordNotFound records a request for a file tftpd does not have as a failed
// hop of the client's boot session: a boot file missing from the map is a
// boot that stops here, and the diagnosis names it.
func (s *Server) recordNotFound(src *net.UDPAddr, name string) {
	if s.cfg.Sessions == nil {
		return
	}
	x := &xfer{client: src, clientIP: src.IP.String(), file: name}
	s.startRecord(x).finish(x, 0, diagnose.OutcomeNotFound, errors.New("file not found"))
}
