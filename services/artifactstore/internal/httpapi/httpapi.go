// Package httpapi serves artifacts over HTTP (fasthttp): GET and HEAD
// /artifacts/<name> with ETag (the sha256), Last-Modified, If-None-Match,
// If-Modified-Since, If-Range and single or multiple byte ranges. File bodies
// are handed to the connection's ReadFrom as an *os.File, which the kernel
// sends with sendfile(2); small blobs the catalog holds in memory go out with
// their header in one write (held.go).
//
// A traceparent query parameter (as bootapi renders into iPXE scripts) makes the
// download a hop ("artifact") of that boot session.
package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/artifactref"
	"github.com/bootchain/bootchain/pkg/diagnose"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/services/artifactstore/internal/catalog"
	"github.com/bootchain/bootchain/services/artifactstore/internal/httprange"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
)

// Prefix is the path artifacts are served under.
const Prefix = "/artifacts/"

// HopName is the boot-session hop of a download.
const HopName = "artifact"

// Config configures the handler.
type Config struct {
	// Catalog serves the artifacts. Required.
	Catalog *catalog.Catalog
	// Sessions records downloads that carry a traceparent; nil records none.
	Sessions *session.Recorder
	// Other serves every path outside /artifacts/ (metrics, health); nil: 404.
	Other fasthttp.RequestHandler
	// Context bounds the work requests start (pulls from the origin): it ends
	// when the server stops. Default context.Background().
	Context context.Context
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Handler is the HTTP handler.
type Handler struct {
	cfg Config
	log *slog.Logger
	// validators caches the validator headers of the artifacts served
	// (*artifactv1.Artifact -> *validatorHeaders); nValidators counts its
	// entries, and it is emptied past maxValidators.
	validators  sync.Map
	nValidators atomic.Int64
	// byStatus caches the requests counter of each status code.
	byStatus [600]atomic.Pointer[prometheus.Counter]
}

// maxValidators bounds the validators cache (an artifact replaced leaves an
// entry behind until the cache is emptied).
const maxValidators = 4096

// New returns the handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	return &Handler{cfg: cfg, log: cfg.Logger}
}

// result is what a request did, for the hop, metrics and logs.
type result struct {
	status int
	bytes  int64
	ranges string
	err    error
}

// request is what the answer to one request depends on, read from its
// fasthttp.RequestCtx (which is recycled once the handler returns; a body
// written after that keeps a request of its own).
type request struct {
	method string
	path   string
	name   string
	addr   net.Addr // the client's
	// the headers that choose the answer
	rng, ifRange, ifNoneMatch, ifModifiedSince string
}

// Serve is the fasthttp handler: /artifacts/<name>, and Other for the rest.
// The path is used as sent, only percent-decoded (no cleaning and no
// redirects): a name that is not valid is a 400, never a lookup of something
// else.
func (h *Handler) Serve(rc *fasthttp.RequestCtx) {
	path, query, err := requestPath(rc)
	if err != nil {
		h.finish(&request{method: string(rc.Method()), addr: rc.RemoteAddr()}, nil, nil, plain(rc, http.StatusBadRequest, err))
		return
	}
	if !strings.HasPrefix(path, Prefix) {
		// A target net/http would not have parsed is a 400, as it was.
		if _, err := url.ParseRequestURI(string(rc.RequestURI())); err != nil {
			plain(rc, http.StatusBadRequest, fmt.Errorf("request target: %w", err))
			return
		}
		if h.cfg.Other != nil {
			h.cfg.Other(rc)
			return
		}
		rc.Error("404 page not found\n", http.StatusNotFound)
		return
	}
	r := &request{method: string(rc.Method()), path: path, addr: rc.RemoteAddr(), name: path[len(Prefix):],
		rng: string(rc.Request.Header.Peek("Range")), ifRange: string(rc.Request.Header.Peek("If-Range")),
		ifNoneMatch: string(rc.Request.Header.Peek("If-None-Match")), ifModifiedSince: string(rc.Request.Header.Peek("If-Modified-Since"))}
	ctx := h.cfg.Context
	var hop *session.Hop
	var sess *session.Session
	var tp, pin []byte
	if query {
		args := rc.QueryArgs()
		tp, pin = args.Peek("traceparent"), args.Peek("sha256")
	}
	if len(tp) > 0 && h.cfg.Sessions != nil {
		if s, ok := h.cfg.Sessions.FromTraceparent(string(tp), ""); ok {
			sess = s
			ctx, hop = s.StartHop(ctx, HopName,
				attribute.String("http.request.method", r.method),
				attribute.String("url.path", r.path),
				attribute.String("client.address", r.addr.String()),
				attribute.String("user_agent.original", string(rc.UserAgent())))
			hop.SetDetail(r.name)
		}
	}
	res, body := h.serve(ctx, rc, r, string(pin))
	if body != nil {
		// Metrics, log and hop once the body has been sent (body.CloseWithError).
		body.done = func(res result) { h.finish(r, hop, sess, res) }
		body.res = res
		return
	}
	h.finish(r, hop, sess, res)
}

// requestPath is the request's path percent-decoded, as net/http's URL.Path,
// and whether the request has a query. It reads the request target as sent;
// for the absolute form a proxy sends, the path fasthttp parsed out of it as
// sent (PathOriginal: fasthttp's Path would be cleaned).
func requestPath(rc *fasthttp.RequestCtx) (path string, query bool, err error) {
	raw := rc.RequestURI()
	query = bytes.IndexByte(raw, '?') >= 0
	if len(raw) == 0 || raw[0] != '/' {
		raw = rc.URI().PathOriginal()
	}
	if i := bytes.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if bytes.IndexByte(raw, '%') < 0 {
		return string(raw), query, nil
	}
	p, err := url.PathUnescape(string(raw))
	if err != nil {
		return "", query, fmt.Errorf("path: %w", err)
	}
	return p, query, nil
}

// finish counts a request, logs a failure and ends its hop.
func (h *Handler) finish(r *request, hop *session.Hop, sess *session.Session, res result) {
	m := h.cfg.Catalog.Metrics()
	h.requests(res.status).Inc()
	m.HTTPBytes.Add(float64(res.bytes))
	if res.err != nil {
		h.log.Info("artifact request failed", "artifact", r.name, "status", res.status, "client", r.addr.String(), "bytes", res.bytes, "err", res.err)
	}
	if hop != nil {
		name := r.name
		hop.SetBytes(res.bytes)
		hop.SetAttr("http.response.status_code", strconv.Itoa(res.status))
		if res.ranges != "" {
			hop.SetAttr("bootchain.ranges", res.ranges)
		}
		detail := fmt.Sprintf("%s %d %dB", name, res.status, res.bytes)
		if res.ranges != "" {
			detail += " " + res.ranges
		}
		hop.SetDetail(detail)
		if res.err != nil || res.status >= 400 {
			err := res.err
			if err == nil {
				err = errors.New(http.StatusText(res.status))
			}
			hop.Fail(err)
		}
		why := failure(res)
		if why != "" {
			hop.SetAttr(diagnose.AttrArtifactFailure, why)
		}
		hop.End()
		if why != "" {
			// A boot that cannot have its kernel or initrd ends here: failing the
			// session now lets bootapi fail the machine's job with the diagnosis
			// at once, not when the job's hour runs out.
			sess.Finish(bootapiv1.SessionState_SESSION_STATE_FAILED, HopName, fmt.Sprintf("%s answered %d: %v", name, res.status, res.err))
		}
	}
}

// requests is the requests counter of status code.
func (h *Handler) requests(code int) prometheus.Counter {
	if code < 0 || code >= len(h.byStatus) {
		return h.cfg.Catalog.Metrics().HTTPRequests.WithLabelValues(strconv.Itoa(code))
	}
	if c := h.byStatus[code].Load(); c != nil {
		return *c
	}
	c := h.cfg.Catalog.Metrics().HTTPRequests.WithLabelValues(strconv.Itoa(code))
	h.byStatus[code].Store(&c)
	return c
}

// validatorHeaders are an artifact's ETag and Last-Modified, formatted once.
type validatorHeaders struct {
	sha, etag string
	etagB     []byte // etag
	secs      int64  // of the artifact's update time, which modified truncates
	modified  time.Time
	lastMod   []byte // nil: none
}

// validatorsOf returns a's validators, from the cache when a (the catalog's
// value, replaced, not changed, when the artifact changes) was served before.
func (h *Handler) validatorsOf(a *artifactv1.Artifact) *validatorHeaders {
	if v, ok := h.validators.Load(a); ok {
		if v := v.(*validatorHeaders); v.sha == a.GetSha256() && v.secs == a.GetUpdateTime().GetSeconds() {
			return v
		}
	}
	v := &validatorHeaders{sha: a.GetSha256(), etag: `"` + a.GetSha256() + `"`, secs: a.GetUpdateTime().GetSeconds(),
		modified: a.GetUpdateTime().AsTime().Truncate(time.Second)}
	v.etagB = []byte(v.etag)
	if !v.modified.IsZero() && v.modified.Unix() > 0 {
		v.lastMod = fasthttp.AppendHTTPDate(nil, v.modified)
	}
	if h.nValidators.Add(1) > maxValidators {
		h.validators.Clear()
		h.nValidators.Store(1)
	}
	h.validators.Store(a, v)
	return v
}

// failure classifies a download that a boot cannot get past: the artifact is
// not there, or its content is not what the URL pins (or failed its sha256
// check here). "" for anything a retry may mend.
func failure(res result) string {
	switch {
	case res.status == http.StatusNotFound:
		return diagnose.FailureNotFound
	case res.status == http.StatusConflict, errors.Is(res.err, catalog.ErrCorrupt):
		return diagnose.FailureChecksum
	}
	return ""
}

// serve answers r; for a GET with a body it returns the body, which fasthttp
// sends after the handler returns.
func (h *Handler) serve(ctx context.Context, rc *fasthttp.RequestCtx, r *request, pin string) (result, *stream) {
	if err := catalog.ValidateName("name", r.name); err != nil {
		return plain(rc, http.StatusBadRequest, err), nil
	}
	if r.method != http.MethodGet && r.method != http.MethodHead {
		rc.Response.Header.Set("Allow", "GET, HEAD")
		return plain(rc, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.method)), nil
	}
	if pin != "" && !artifactref.ValidDigest(pin) {
		return plain(rc, http.StatusBadRequest, fmt.Errorf("sha256 %q: want 64 lower-case hex digits", pin)), nil
	}
	a, err := h.cfg.Catalog.Lookup(ctx, r.name)
	if err != nil {
		return h.lookupError(rc, err), nil
	}
	if pin != "" && pin != a.GetSha256() {
		// A pinned profile never boots what replaced the content it was pinned to.
		return plain(rc, http.StatusConflict, fmt.Errorf("artifact %q was replaced: it holds sha256 %s now, this URL pins %s; update the profile's pin", r.name, a.GetSha256(), pin)), nil
	}
	v := h.validatorsOf(a)
	if notModified(r, v) {
		v.set(rc)
		rc.SetStatusCode(http.StatusNotModified)
		return result{status: http.StatusNotModified}, nil
	}
	if b, ok := h.cfg.Catalog.Cached(a); ok {
		// Small and in memory: the header and body go out in one write.
		return respond(rc, r, content{b: b}, a, v)
	}
	if r.method == http.MethodHead {
		// The answer needs no bytes; but the blob must be there and sound.
		f, err := h.cfg.Catalog.Open(ctx, a)
		if err != nil {
			return h.lookupError(rc, err), nil
		}
		f.Close()
		return respond(rc, r, content{}, a, v)
	}
	f, err := h.cfg.Catalog.Open(ctx, a)
	if err != nil {
		return h.lookupError(rc, err), nil
	}
	res, body := respond(rc, r, content{f: f}, a, v)
	if body == nil {
		f.Close()
	}
	return res, body
}

// Header names as fasthttp writes them (set canonical: not normalized again).
var (
	hdrETag         = []byte("Etag")
	hdrLastModified = []byte("Last-Modified")
	hdrAcceptRanges = []byte("Accept-Ranges")
	bytesUnit       = []byte("bytes")
)

// set sets ETag, Last-Modified and Accept-Ranges.
func (v *validatorHeaders) set(rc *fasthttp.RequestCtx) {
	hdr := &rc.Response.Header
	hdr.SetCanonical(hdrETag, v.etagB)
	if v.lastMod != nil {
		hdr.SetCanonical(hdrLastModified, v.lastMod)
	}
	hdr.SetCanonical(hdrAcceptRanges, bytesUnit)
}

// respond answers a GET or HEAD of a's content c, whole or in ranges.
func respond(rc *fasthttp.RequestCtx, r *request, c content, a *artifactv1.Artifact, v *validatorHeaders) (result, *stream) {
	size := a.GetSize()
	ct := a.GetContentType()
	if ct == "" {
		ct = catalog.DefaultContentType
	}
	v.set(rc)
	var ranges []httprange.Range
	if r.rng != "" && r.method == http.MethodGet && rangeApplies(r, v) {
		var err error
		ranges, err = httprange.Parse(r.rng, size)
		if err != nil {
			rc.Response.Header.Set("Content-Range", httprange.Unsatisfied(size))
			return plain(rc, http.StatusRequestedRangeNotSatisfiable, err), nil
		}
		if httprange.Total(ranges) > size {
			// Overlapping ranges that add up to more than the file: send the file once.
			ranges = nil
		}
	}
	hdr := &rc.Response.Header
	s := &stream{c: c, conn: heldConn(rc)}
	var res result
	switch len(ranges) {
	case 0:
		hdr.SetContentType(ct)
		rc.SetStatusCode(http.StatusOK)
		res = result{status: http.StatusOK}
		s.one[0] = part{rg: httprange.Range{Start: 0, Length: size}}
		s.parts = s.one[:]
	case 1:
		rg := ranges[0]
		hdr.SetContentType(ct)
		hdr.Set("Content-Range", rg.ContentRange(size))
		rc.SetStatusCode(http.StatusPartialContent)
		res = result{status: http.StatusPartialContent, ranges: r.rng}
		s.one[0] = part{rg: rg}
		s.parts = s.one[:]
	default:
		var b [12]byte
		rand.Read(b[:])
		boundary := hex.EncodeToString(b[:])
		s.parts = make([]part, len(ranges))
		for i, rg := range ranges {
			sep := "\r\n--"
			if i == 0 {
				sep = "--"
			}
			s.parts[i] = part{head: fmt.Sprintf("%s%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n", sep, boundary, ct, rg.ContentRange(size)), rg: rg}
		}
		s.tail = "\r\n--" + boundary + "--\r\n"
		hdr.SetContentType("multipart/byteranges; boundary=" + boundary)
		rc.SetStatusCode(http.StatusPartialContent)
		res = result{status: http.StatusPartialContent, ranges: r.rng}
	}
	if r.method == http.MethodHead {
		hdr.SetContentLength(int(s.size()))
		return res, nil
	}
	rc.Response.SetBodyStream(s, int(s.size()))
	return res, s
}

func (h *Handler) lookupError(rc *fasthttp.RequestCtx, err error) result {
	var fe *catalog.FieldError
	switch {
	case errors.As(err, &fe):
		return plain(rc, http.StatusBadRequest, err)
	case errors.Is(err, catalog.ErrNotFound):
		return plain(rc, http.StatusNotFound, err)
	case errors.Is(err, catalog.ErrOriginUnreachable):
		// Not pulled yet and the origin does not answer (a site cut off from
		// the core): not a bad gateway, a temporary state. Retry.
		rc.Response.Header.Set("Retry-After", strconv.Itoa(int(OriginRetryAfter/time.Second)))
		return plain(rc, http.StatusServiceUnavailable, err)
	case errors.Is(err, catalog.ErrOrigin), errors.Is(err, catalog.ErrUntrusted):
		return plain(rc, http.StatusBadGateway, err)
	case errors.Is(err, catalog.ErrCorrupt):
		return plain(rc, http.StatusServiceUnavailable, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return plain(rc, http.StatusServiceUnavailable, err)
	}
	return plain(rc, http.StatusInternalServerError, err)
}

// OriginRetryAfter is what a 503 for an unreachable origin asks the client to
// wait.
const OriginRetryAfter = 10 * time.Second

// plain answers with a short text error.
func plain(rc *fasthttp.RequestCtx, code int, err error) result {
	rc.Response.Header.SetContentType("text/plain; charset=utf-8")
	rc.Response.Header.Set("X-Content-Type-Options", "nosniff")
	rc.SetStatusCode(code)
	rc.SetBodyString(err.Error() + "\n")
	return result{status: code, err: err}
}

// content is what a body is copied from: the blob's bytes when the catalog
// holds them in memory (small blobs), else its open file (nil for a HEAD).
type content struct {
	b []byte
	f *os.File
}

// part is one piece of a body: head (a multipart part's header), then rg of
// the content.
type part struct {
	head string
	rg   httprange.Range
}

// stream is a GET's body, which fasthttp writes after the handler returned:
// its WriteTo sends each range of a file through the connection's ReadFrom
// (sendfile), and a body from memory in one write with the header. Its
// CloseWithError closes the file and reports the result (done).
type stream struct {
	c     content
	parts []part
	tail  string
	// conn holds writes for a body from memory (nil: TLS, or a listener that
	// is not a ProgressListener).
	conn *progressConn

	one [1]part // parts of a body in one piece

	res  result
	done func(result)
	// r is the body as a reader, made if fasthttp reads instead of WriteTo.
	r io.Reader
}

func (s *stream) size() int64 {
	n := int64(len(s.tail))
	for _, p := range s.parts {
		n += int64(len(p.head)) + p.rg.Length
	}
	return n
}

// WriteTo writes the body to w, the connection's *bufio.Writer, whose buffer
// holds the response header.
func (s *stream) WriteTo(w io.Writer) (int64, error) {
	defer func() {
		// fasthttp recovers a panic here without reporting it to
		// CloseWithError: record it, so the answer is not logged as sent.
		if p := recover(); p != nil {
			if s.res.err == nil {
				s.res.err = fmt.Errorf("panic sending the response: %v", p)
			}
			panic(p)
		}
	}()
	bw, _ := w.(*bufio.Writer)
	if s.c.f == nil && s.conn != nil && bw != nil {
		// Header and body in one write: hold the connection's writes, flush
		// the header (and any answers before it) into them, add the body,
		// then send them together.
		s.conn.hold()
		err := bw.Flush()
		var n int64
		if err == nil {
			n, err = s.writeMemory(s.conn)
		}
		if rerr := s.conn.release(); err == nil {
			err = rerr
		}
		if err != nil {
			n = 0
		}
		s.res.bytes += n
		return n, err
	}
	if s.c.f == nil {
		n, err := s.writeMemory(w)
		s.res.bytes += n
		return n, err
	}
	var total int64
	for _, p := range s.parts {
		n, err := io.WriteString(w, p.head)
		total += int64(n)
		if err != nil {
			return total, err
		}
		m, err := s.sendFile(w, bw, p.rg)
		total += m
		s.res.bytes += m
		if err != nil {
			return total, fmt.Errorf("sent %d of %d bytes: %w", m, p.rg.Length, err)
		}
	}
	n, err := io.WriteString(w, s.tail)
	return total + int64(n), err
}

// writeMemory writes the parts of a body from memory; it counts the content's
// bytes (not the multipart heads).
func (s *stream) writeMemory(w io.Writer) (int64, error) {
	var n int64
	for _, p := range s.parts {
		if _, err := io.WriteString(w, p.head); err != nil {
			return n, err
		}
		m, err := w.Write(s.c.b[p.rg.Start : p.rg.Start+p.rg.Length])
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	_, err := io.WriteString(w, s.tail)
	return n, err
}

// sendFile copies rg of the file to w. With the buffer flushed first,
// bufio.Writer.ReadFrom hands the *io.LimitedReader over the *os.File to the
// connection's ReadFrom, which sends it with sendfile(2).
func (s *stream) sendFile(w io.Writer, bw *bufio.Writer, rg httprange.Range) (int64, error) {
	if bw != nil && bw.Buffered() > 0 {
		if err := bw.Flush(); err != nil {
			return 0, err
		}
	}
	if _, err := s.c.f.Seek(rg.Start, io.SeekStart); err != nil {
		return 0, err
	}
	return io.Copy(w, &io.LimitedReader{R: s.c.f, N: rg.Length})
}

// Read serves a caller that reads the body instead of calling WriteTo.
func (s *stream) Read(p []byte) (int, error) {
	if s.r == nil {
		var rs []io.Reader
		for _, pt := range s.parts {
			rs = append(rs, strings.NewReader(pt.head))
			if s.c.f != nil {
				rs = append(rs, io.NewSectionReader(s.c.f, pt.rg.Start, pt.rg.Length))
			} else {
				rs = append(rs, strings.NewReader(string(s.c.b[pt.rg.Start:pt.rg.Start+pt.rg.Length])))
			}
		}
		s.r = io.MultiReader(append(rs, strings.NewReader(s.tail))...)
	}
	// Heads and content alike: a reader cannot tell them apart.
	n, err := s.r.Read(p)
	s.res.bytes += int64(n)
	return n, err
}

// CloseWithError is called by fasthttp once the body was written (err: why
// not all of it), or dropped.
func (s *stream) CloseWithError(err error) error {
	if s.c.f != nil {
		s.c.f.Close()
	}
	if err != nil && s.res.err == nil {
		s.res.err = fmt.Errorf("sending the response: %w", err)
	}
	if s.done != nil {
		s.done(s.res)
		s.done = nil
	}
	return nil
}

// notModified evaluates If-None-Match, or If-Modified-Since when there is no
// If-None-Match (RFC 9110 section 13.2.2).
func notModified(r *request, v *validatorHeaders) bool {
	if r.ifNoneMatch != "" {
		return etagListMatches(r.ifNoneMatch, v.etag, false)
	}
	if r.ifModifiedSince == "" || v.modified.IsZero() {
		return false
	}
	t, err := http.ParseTime(r.ifModifiedSince)
	if err != nil {
		return false
	}
	return !v.modified.After(t)
}

// rangeApplies evaluates If-Range: no header, a strong ETag match, or an exact
// Last-Modified match.
func rangeApplies(r *request, v *validatorHeaders) bool {
	ir := strings.TrimSpace(r.ifRange)
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		return ir == v.etag
	}
	t, err := http.ParseTime(ir)
	return err == nil && !v.modified.IsZero() && t.Equal(v.modified)
}

// etagListMatches reports whether a comma-separated entity-tag list (or "*")
// contains etag; weak comparison ignores W/ prefixes.
func etagListMatches(list, etag string, strong bool) bool {
	for t := range strings.SplitSeq(list, ",") {
		t = strings.TrimSpace(t)
		if t == "*" {
			return true
		}
		if !strong {
			t = strings.TrimPrefix(t, "W/")
		}
		if t == etag {
			return true
		}
	}
	return false
}
