package ui

import (
	"bytes"
	"context"
	"io/fs"
	"mime"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/valyala/fasthttp"
)

// securityHeaders go on every dashboard answer: scripts and styles only from
// the dashboard's own files (no inline script for an injection to run), no
// framing, nothing cached, no referrer sent to another site (the trace
// backend).
func securityHeaders(rc *fasthttp.RequestCtx) {
	h := &rc.Response.Header
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// redirect sends the browser to a path of the dashboard (relative to this
// host, whatever the request's Host header says).
func redirect(rc *fasthttp.RequestCtx, to string) {
	rc.Response.Header.Set("Location", to)
	rc.SetStatusCode(fasthttp.StatusSeeOther)
}

func plainError(rc *fasthttp.RequestCtx, msg string, code int) {
	rc.Error(msg+"\n", code)
}

// serve routes a request under /ui. Every state-changing request is a POST
// (sign in, sign out); every page is a GET and changes nothing.
func (u *UI) serve(base context.Context, rc *fasthttp.RequestCtx) {
	securityHeaders(rc)
	p := string(rc.Path())
	get := rc.IsGet() || rc.IsHead()
	switch {
	case p == "/ui" || p == "/ui/":
		if get {
			redirect(rc, "/ui/boots")
			return
		}
	case strings.HasPrefix(p, "/ui/static/"):
		if get {
			u.static(rc, strings.TrimPrefix(p, "/ui/static/"))
			return
		}
	case p == "/ui/login":
		if get {
			u.loginPage(rc, fasthttp.StatusOK, "", safeNext(string(rc.QueryArgs().Peek("next"))))
			return
		}
		if rc.IsPost() {
			u.signIn(base, rc)
			return
		}
		methodNotAllowed(rc, "GET, HEAD, POST")
		return
	case p == "/ui/logout":
		if rc.IsPost() {
			u.signOut(rc)
			return
		}
		methodNotAllowed(rc, "POST")
		return
	default:
		if !get {
			methodNotAllowed(rc, "GET, HEAD")
			return
		}
		id, err := u.identify(base, rc)
		if err != nil {
			if p == "/ui/events" || len(rc.Request.Header.Peek("Authorization")) > 0 {
				plainError(rc, "sign in at /ui/login: "+err.Error(), fasthttp.StatusUnauthorized)
				return
			}
			redirect(rc, "/ui/login?next="+url.QueryEscape(string(rc.RequestURI())))
			return
		}
		u.page(base, rc, p, id)
		return
	}
	methodNotAllowed(rc, "GET, HEAD")
}

func methodNotAllowed(rc *fasthttp.RequestCtx, allow string) {
	plainError(rc, "Method Not Allowed", fasthttp.StatusMethodNotAllowed)
	rc.Response.Header.Set("Allow", allow)
}

// freshWait bounds how long a list page waits for its snapshot's rebuild (the
// first after a long idle sorts everything: about 2 s for 300,000 machines);
// past it the page shows the previous snapshot.
const freshWait = 5 * time.Second

// page serves a signed-in user's GET.
func (u *UI) page(base context.Context, rc *fasthttp.RequestCtx, p string, id auth.Identity) {
	f := parseFilter(rc.QueryArgs())
	partial := rc.QueryArgs().Has("partial")
	if p == "/ui/boots" || p == "/ui/jobs" || p == "/ui/machines" {
		ctx, cancel := context.WithTimeout(base, freshWait)
		u.fresh(ctx)
		cancel()
	}
	switch {
	case p == "/ui/events":
		u.events(base, rc)
	case p == "/ui/boots":
		u.render(rc, "boots", partial, u.bootsData(id, f))
	case strings.HasPrefix(p, "/ui/boots/"):
		d, ok := u.bootData(base, id, strings.TrimPrefix(p, "/ui/boots/"))
		if !ok {
			rc.SetStatusCode(fasthttp.StatusNotFound)
		}
		u.render(rc, "boot", partial, d)
	case p == "/ui/jobs":
		u.render(rc, "jobs", partial, u.jobsData(id, f))
	case p == "/ui/machines":
		u.render(rc, "machines", partial, u.machinesData(id, f))
	default:
		plainError(rc, "404 page not found", fasthttp.StatusNotFound)
	}
}

// render executes a page's template (its live part alone when partial, for
// the page's script to swap in after an event).
func (u *UI) render(rc *fasthttp.RequestCtx, name string, partial bool, data any) {
	if partial {
		name += "-live"
	}
	var b bytes.Buffer
	if err := u.pages.ExecuteTemplate(&b, name, data); err != nil {
		u.log.Error("dashboard page", "page", name, "err", err)
		plainError(rc, "the page could not be rendered; see bootapi's log", fasthttp.StatusInternalServerError)
		return
	}
	rc.SetContentType("text/html; charset=utf-8")
	rc.SetBody(b.Bytes())
}

func (u *UI) loginPage(rc *fasthttp.RequestCtx, code int, msg, next string) {
	rc.SetStatusCode(code)
	u.render(rc, "login", false, loginData{common: common{Title: "Sign in"}, Error: msg, Next: next})
	rc.SetStatusCode(code)
}

func (u *UI) static(rc *fasthttp.RequestCtx, name string) {
	b, err := fs.ReadFile(files, "static/"+path.Base(name))
	if err != nil || name != path.Base(name) {
		plainError(rc, "404 page not found", fasthttp.StatusNotFound)
		return
	}
	rc.Response.Header.Set("Cache-Control", "max-age=300")
	rc.SetContentType(mime.TypeByExtension(path.Ext(name)))
	rc.SetBody(b)
}

// filter is a list page's query: site, state, free text, page and page size.
type filter struct {
	Site, State, Q string
	Page, N        int
}

// DefaultPageSize and MaxPageSize bound a page's rows.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

func parseFilter(a *fasthttp.Args) filter {
	f := filter{
		Site:  string(a.Peek("site")),
		State: strings.ToLower(string(a.Peek("state"))),
		Q:     strings.ToLower(strings.TrimSpace(string(a.Peek("q")))),
		N:     DefaultPageSize,
	}
	if n, err := strconv.Atoi(string(a.Peek("n"))); err == nil && n > 0 {
		f.N = min(n, MaxPageSize)
	}
	if p, err := strconv.Atoi(string(a.Peek("page"))); err == nil && p > 1 {
		f.Page = p - 1
	}
	return f
}

// URL is the filter's query for page p (from 0), for links.
func (f filter) URL(p int) string {
	v := url.Values{}
	if f.Site != "" {
		v.Set("site", f.Site)
	}
	if f.State != "" {
		v.Set("state", f.State)
	}
	if f.Q != "" {
		v.Set("q", f.Q)
	}
	if f.N != DefaultPageSize {
		v.Set("n", strconv.Itoa(f.N))
	}
	if p > 0 {
		v.Set("page", strconv.Itoa(p+1))
	}
	if len(v) == 0 {
		return "?"
	}
	return "?" + v.Encode()
}

// WithSite is the filter's query for another site, from the first page.
func (f filter) WithSite(site string) string { f.Site = site; return f.URL(0) }

// WithState is the filter's query for another state, from the first page.
func (f filter) WithState(state string) string { f.State = state; return f.URL(0) }

// contains reports whether any of the fields holds q (already lower case).
func contains(q string, fields ...string) bool {
	for _, s := range fields {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	return false
}
