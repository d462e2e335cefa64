// Package httpapi serves artifacts over HTTP: GET and HEAD /artifacts/<name> with
// ETag (the sha256), Last-Modified, If-None-Match, If-Modified-Since, If-Range and
// single or multiple byte ranges. Bodies are copied from the blob's *os.File into
// the connection, so net/http hands them to sendfile(2).
//
// A traceparent query parameter (as bootapi renders into iPXE scripts) makes the
// download a hop ("artifact") of that boot session.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/artifactref"
	"github.com/bootchain/bootchain/pkg/diagnose"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/services/artifactstore/internal/catalog"
	"github.com/bootchain/bootchain/services/artifactstore/internal/httprange"
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
	Other http.Handler
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Handler is the HTTP handler.
type Handler struct {
	cfg Config
	log *slog.Logger
}

// New returns the handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
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

// ServeHTTP serves /artifacts/<name>. The path is used as is (no cleaning and no
// redirects): a name that is not valid is a 400, never a lookup of something else.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, Prefix) {
		if h.cfg.Other != nil {
			h.cfg.Other.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	ctx := r.Context()
	var hop *session.Hop
	var sess *session.Session
	if tp := r.URL.Query().Get("traceparent"); tp != "" && h.cfg.Sessions != nil {
		if s, ok := h.cfg.Sessions.FromTraceparent(tp, ""); ok {
			sess = s
			ctx, hop = s.StartHop(ctx, HopName,
				attribute.String("http.request.method", r.Method),
				attribute.String("url.path", r.URL.Path),
				attribute.String("client.address", r.RemoteAddr),
				attribute.String("user_agent.original", r.UserAgent()))
			hop.SetDetail(name)
		}
	}
	res := h.serve(ctx, w, r, name)
	m := h.cfg.Catalog.Metrics()
	m.HTTPRequests.WithLabelValues(strconv.Itoa(res.status)).Inc()
	m.HTTPBytes.Add(float64(res.bytes))
	if res.err != nil {
		h.log.Info("artifact request failed", "artifact", name, "status", res.status, "client", r.RemoteAddr, "bytes", res.bytes, "err", res.err)
	}
	if hop != nil {
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

func (h *Handler) serve(ctx context.Context, w http.ResponseWriter, r *http.Request, name string) result {
	if err := catalog.ValidateName("name", name); err != nil {
		return plain(w, http.StatusBadRequest, err)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return plain(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
	}
	pin := r.URL.Query().Get("sha256")
	if pin != "" && !artifactref.ValidDigest(pin) {
		return plain(w, http.StatusBadRequest, fmt.Errorf("sha256 %q: want 64 lower-case hex digits", pin))
	}
	a, err := h.cfg.Catalog.Lookup(ctx, name)
	if err != nil {
		return h.lookupError(w, err)
	}
	if pin != "" && pin != a.GetSha256() {
		// A pinned profile never boots what replaced the content it was pinned to.
		return plain(w, http.StatusConflict, fmt.Errorf("artifact %q was replaced: it holds sha256 %s now, this URL pins %s; update the profile's pin", name, a.GetSha256(), pin))
	}
	etag := `"` + a.GetSha256() + `"`
	modified := a.GetUpdateTime().AsTime().Truncate(time.Second)
	hdr := w.Header()
	hdr.Set("ETag", etag)
	if !modified.IsZero() && modified.Unix() > 0 {
		hdr.Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
	}
	hdr.Set("Accept-Ranges", "bytes")
	if notModified(r, etag, modified) {
		w.WriteHeader(http.StatusNotModified)
		return result{status: http.StatusNotModified}
	}
	if b, ok := h.cfg.Catalog.Cached(a); ok {
		hc := heldConn(r)
		if hc == nil || r.Method != http.MethodGet {
			return respond(w, r, content{b: b}, a, etag, modified)
		}
		// Small and in memory: the header and body go out in one write.
		hc.hold()
		res := respond(w, r, content{b: b}, a, etag, modified)
		if err := hc.release(w); err != nil && res.err == nil {
			res.bytes, res.err = 0, fmt.Errorf("sending the response: %w", err)
		}
		return res
	}
	f, err := h.cfg.Catalog.Open(ctx, a)
	if err != nil {
		hdr.Del("ETag")
		hdr.Del("Last-Modified")
		hdr.Del("Accept-Ranges")
		return h.lookupError(w, err)
	}
	defer f.Close()
	return respond(w, r, content{f: f}, a, etag, modified)
}

// respond answers a GET or HEAD of a's content c, whole or in ranges; the
// validators are in the header already.
func respond(w http.ResponseWriter, r *http.Request, c content, a *artifactv1.Artifact, etag string, modified time.Time) result {
	hdr := w.Header()
	size := a.GetSize()
	ct := a.GetContentType()
	if ct == "" {
		ct = catalog.DefaultContentType
	}

	var ranges []httprange.Range
	spec := r.Header.Get("Range")
	if spec != "" && r.Method == http.MethodGet && rangeApplies(r, etag, modified) {
		var err error
		ranges, err = httprange.Parse(spec, size)
		if err != nil {
			hdr.Set("Content-Range", httprange.Unsatisfied(size))
			return plain(w, http.StatusRequestedRangeNotSatisfiable, err)
		}
		if httprange.Total(ranges) > size {
			// Overlapping ranges that add up to more than the file: send the file once.
			ranges = nil
		}
	}
	switch len(ranges) {
	case 0:
		hdr.Set("Content-Type", ct)
		hdr.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return body(r, w, c, httprange.Range{Start: 0, Length: size}, result{status: http.StatusOK})
	case 1:
		rg := ranges[0]
		hdr.Set("Content-Type", ct)
		hdr.Set("Content-Range", rg.ContentRange(size))
		hdr.Set("Content-Length", strconv.FormatInt(rg.Length, 10))
		w.WriteHeader(http.StatusPartialContent)
		return body(r, w, c, rg, result{status: http.StatusPartialContent, ranges: spec})
	}
	return multipart(r, w, c, ranges, size, ct, spec)
}

func (h *Handler) lookupError(w http.ResponseWriter, err error) result {
	var fe *catalog.FieldError
	switch {
	case errors.As(err, &fe):
		return plain(w, http.StatusBadRequest, err)
	case errors.Is(err, catalog.ErrNotFound):
		return plain(w, http.StatusNotFound, err)
	case errors.Is(err, catalog.ErrOriginUnreachable):
		// Not pulled yet and the origin does not answer (a site cut off from
		// the core): not a bad gateway, a temporary state. Retry.
		w.Header().Set("Retry-After", strconv.Itoa(int(OriginRetryAfter/time.Second)))
		return plain(w, http.StatusServiceUnavailable, err)
	case errors.Is(err, catalog.ErrOrigin), errors.Is(err, catalog.ErrUntrusted):
		return plain(w, http.StatusBadGateway, err)
	case errors.Is(err, catalog.ErrCorrupt):
		return plain(w, http.StatusServiceUnavailable, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return plain(w, http.StatusServiceUnavailable, err)
	}
	return plain(w, http.StatusInternalServerError, err)
}

// OriginRetryAfter is what a 503 for an unreachable origin asks the client to
// wait.
const OriginRetryAfter = 10 * time.Second

// plain answers with a short text error.
func plain(w http.ResponseWriter, code int, err error) result {
	msg := err.Error() + "\n"
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(code)
	io.WriteString(w, msg)
	return result{status: code, err: err}
}

// content is what a body is copied from: the blob's bytes when the catalog
// holds them in memory (small blobs), else its open file.
type content struct {
	b []byte
	f *os.File
}

// body copies rg of c to w. From a file, io.CopyN hands w (net/http's response,
// an io.ReaderFrom) an *io.LimitedReader over the *os.File, which the TCP
// connection sends with sendfile(2); from memory, one Write.
func body(r *http.Request, w http.ResponseWriter, c content, rg httprange.Range, res result) result {
	if r.Method == http.MethodHead {
		return res
	}
	var n int64
	var err error
	if c.f == nil {
		var m int
		m, err = w.Write(c.b[rg.Start : rg.Start+rg.Length])
		n = int64(m)
	} else {
		if _, err := c.f.Seek(rg.Start, io.SeekStart); err != nil {
			res.err = err
			return res
		}
		n, err = io.CopyN(w, c.f, rg.Length)
	}
	res.bytes += n
	if err != nil {
		res.err = fmt.Errorf("sent %d of %d bytes: %w", n, rg.Length, err)
	}
	return res
}

func multipart(r *http.Request, w http.ResponseWriter, c content, ranges []httprange.Range, size int64, ct, spec string) result {
	var b [12]byte
	rand.Read(b[:])
	boundary := hex.EncodeToString(b[:])
	heads := make([]string, len(ranges))
	total := int64(0)
	for i, rg := range ranges {
		sep := "\r\n--"
		if i == 0 {
			sep = "--"
		}
		heads[i] = fmt.Sprintf("%s%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n", sep, boundary, ct, rg.ContentRange(size))
		total += int64(len(heads[i])) + rg.Length
	}
	tail := "\r\n--" + boundary + "--\r\n"
	total += int64(len(tail))
	hdr := w.Header()
	hdr.Set("Content-Type", "multipart/byteranges; boundary="+boundary)
	hdr.Set("Content-Length", strconv.FormatInt(total, 10))
	w.WriteHeader(http.StatusPartialContent)
	res := result{status: http.StatusPartialContent, ranges: spec}
	if r.Method == http.MethodHead {
		return res
	}
	for i, rg := range ranges {
		if _, err := io.WriteString(w, heads[i]); err != nil {
			res.err = err
			return res
		}
		if res = body(r, w, c, rg, res); res.err != nil {
			return res
		}
	}
	if _, err := io.WriteString(w, tail); err != nil {
		res.err = err
	}
	return res
}

// notModified evaluates If-None-Match, or If-Modified-Since when there is no
// If-None-Match (RFC 9110 section 13.2.2).
func notModified(r *http.Request, etag string, modified time.Time) bool {
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		return etagListMatches(inm, etag, false)
	}
	ims := r.Header.Get("If-Modified-Since")
	if ims == "" || modified.IsZero() {
		return false
	}
	t, err := http.ParseTime(ims)
	if err != nil {
		return false
	}
	return !modified.After(t)
}

// rangeApplies evaluates If-Range: no header, a strong ETag match, or an exact
// Last-Modified match.
func rangeApplies(r *http.Request, etag string, modified time.Time) bool {
	ir := strings.TrimSpace(r.Header.Get("If-Range"))
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		return ir == etag
	}
	t, err := http.ParseTime(ir)
	return err == nil && !modified.IsZero() && t.Equal(modified)
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
