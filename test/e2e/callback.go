package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Report is one request received by a CallbackServer.
type Report struct {
	// Time is when the request was received.
	Time time.Time
	// Method, Path and Query are those of the request line.
	Method string
	Path   string
	Query  url.Values
	// Header is the request's header (traceparent, Content-Type, ...).
	Header http.Header
	// Body is the raw request body (at most 64 KiB are kept).
	Body string
	// Form is Body parsed as application/x-www-form-urlencoded.
	Form url.Values
	// RemoteAddr is the client's address.
	RemoteAddr string
}

// State returns the report's "state" form field (running, succeeded, failed).
func (r Report) State() string { return r.Form.Get("state") }

// CallbackServer stands in for bootapi's callback endpoint: it records every request
// and answers 200, so tests and benchmarks can wait for a machine's reports.
type CallbackServer struct {
	srv  *http.Server
	addr net.Addr

	mu      sync.Mutex
	reports []Report
	changed chan struct{}     // closed and replaced on every new report
	issued  map[string]string // job -> the fresh token its installer was given
}

// ServeCallbacks serves callbacks on ln (for instance a listener from
// lab.Netns.Listen) until Close.
func ServeCallbacks(ln net.Listener) *CallbackServer {
	c := &CallbackServer{addr: ln.Addr(), changed: make(chan struct{})}
	c.srv = &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	// Serve returns ErrServerClosed after Close; nothing to report.
	go c.srv.Serve(ln)
	return c
}

// URL returns the callback URL for a job: http://<addr>/report?job=<job>.
func (c *CallbackServer) URL(job string) string {
	return (&url.URL{Scheme: "http", Host: c.addr.String(), Path: "/report", RawQuery: url.Values{"job": {job}}.Encode()}).String()
}

// ServeHTTP records the request.
func (c *CallbackServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	form, _ := url.ParseQuery(string(body))
	rep := Report{
		Time:       time.Now(),
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.Query(),
		Header:     r.Header.Clone(),
		Body:       string(body),
		Form:       form,
		RemoteAddr: r.RemoteAddr,
	}
	c.mu.Lock()
	c.reports = append(c.reports, rep)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	// As bootapi: a report with a token this server did not hand out (the
	// cmdline's bootstrap token) gets a fresh one in its answer, which the
	// installer must send from then on.
	fmt.Fprintln(w, "ok")
	job, tok := rep.Query.Get("job"), form.Get("token")
	if tok == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.issued == nil {
		c.issued = map[string]string{}
	}
	if c.issued[job] != tok {
		var raw [32]byte
		rand.Read(raw[:])
		c.issued[job] = hex.EncodeToString(raw[:])
		fmt.Fprintln(w, "token "+c.issued[job])
	}
}

// Issued is the token last handed to job's installer in an answer ("" if none).
func (c *CallbackServer) Issued(job string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued[job]
}

// Reports returns the requests received so far, oldest first.
func (c *CallbackServer) Reports() []Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Report(nil), c.reports...)
}

// ErrNoReport is returned by WaitState when ctx ends before the report arrives.
var ErrNoReport = errors.New("e2e: no such report")

// WaitState waits for a POST with form field state=<state> and returns the first
// such report. With no deadline on ctx it gives up after 10 minutes.
func (c *CallbackServer) WaitState(ctx context.Context, state string) (Report, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
	}
	for {
		c.mu.Lock()
		for _, r := range c.reports {
			if r.Method == http.MethodPost && r.State() == state {
				c.mu.Unlock()
				return r, nil
			}
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Report{}, fmt.Errorf("%w: state=%s: %w", ErrNoReport, state, ctx.Err())
		}
	}
}

// Close stops the server.
func (c *CallbackServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.srv.Shutdown(ctx)
}
