package ui

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/metadata"
)

// cookieName holds the user's API token. The cookie is the token itself, not a
// session of bootapi's own, so that any bootapi replica accepts it and a revoked
// token stops working at once; HttpOnly keeps it from scripts, SameSite=Strict
// from other sites' requests, Secure from plain-HTTP hops (browsers keep a
// Secure cookie over http:// only for localhost: elsewhere, serve the
// dashboard over bootapi's HTTPS listener).
const cookieName = "bootchain_ui"

// cookieLifetime bounds how long a browser keeps the token.
const cookieLifetime = 12 * time.Hour

// readPermissions are what a user needs to see the dashboard: the viewer role
// and above have them; a service identity does not.
var readPermissions = []auth.Permission{"sessions.read", "jobs.read", "machines.read"}

var errNoCredential = errors.New("not signed in")

// identify authenticates a request: its cookie, or an Authorization: Bearer
// header (for scripts), checked like a gRPC call's.
func (u *UI) identify(base context.Context, rc *fasthttp.RequestCtx) (auth.Identity, error) {
	tok := string(rc.Request.Header.Cookie(cookieName))
	if h := rc.Request.Header.Peek("Authorization"); len(h) > 0 {
		scheme, rest, _ := bytes.Cut(h, []byte(" "))
		if !strings.EqualFold(string(scheme), "bearer") {
			return auth.Identity{}, errNoCredential
		}
		tok = strings.TrimSpace(string(rest))
	}
	if tok == "" {
		return auth.Identity{}, errNoCredential
	}
	return u.check(base, tok)
}

// check authenticates a token and requires the dashboard's permissions.
func (u *UI) check(base context.Context, tok string) (auth.Identity, error) {
	ctx, cancel := context.WithTimeout(base, 5*time.Second)
	defer cancel()
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok))
	id, err := u.cfg.Auth.Authenticate(ctx)
	if err != nil {
		return auth.Identity{}, errors.New("token refused: unknown, revoked, expired or wrong")
	}
	for _, p := range readPermissions {
		if !id.Role.Allows(p) {
			return auth.Identity{}, errors.New("role " + string(id.Role) + " may not read the dashboard (it needs " + string(p) + ")")
		}
	}
	return id, nil
}

// sameOrigin is the CSRF check of a POST: a browser says where a form was
// sent from, in Sec-Fetch-Site (every current browser) or else in Origin; a
// request from another site is refused. Sec-Fetch-Site comes first: a page
// whose referrer policy withholds its origin sends "Origin: null" on a
// same-origin POST. Clients that send neither header (curl) are not browsers
// another site's page can drive.
func sameOrigin(rc *fasthttp.RequestCtx) bool {
	if s := string(rc.Request.Header.Peek("Sec-Fetch-Site")); s != "" {
		return s == "same-origin" || s == "none"
	}
	o := string(rc.Request.Header.Peek("Origin"))
	if o == "" {
		return true
	}
	ou, err := url.Parse(o)
	if err != nil {
		return false
	}
	scheme := "http"
	if rc.IsTLS() {
		scheme = "https"
	}
	return ou.Scheme == scheme && ou.Host == string(rc.Host())
}

// signIn takes the login form: a valid token becomes the cookie.
func (u *UI) signIn(base context.Context, rc *fasthttp.RequestCtx) {
	if !sameOrigin(rc) {
		plainError(rc, "cross-site request refused", fasthttp.StatusForbidden)
		return
	}
	tok := strings.TrimSpace(string(rc.PostArgs().Peek("token")))
	next := safeNext(string(rc.PostArgs().Peek("next")))
	if tok == "" {
		u.loginPage(rc, fasthttp.StatusBadRequest, "token: required", next)
		return
	}
	id, err := u.check(base, tok)
	if err != nil {
		// The token is never logged; nor is the reason, which could echo it.
		u.log.Info("dashboard sign-in refused", "ip", rc.RemoteIP().String())
		u.loginPage(rc, fasthttp.StatusUnauthorized, err.Error(), next)
		return
	}
	u.log.Info("dashboard sign-in", "who", id.String(), "ip", rc.RemoteIP().String())
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(cookieName)
	c.SetValue(tok)
	c.SetPath("/ui")
	c.SetHTTPOnly(true)
	c.SetSecure(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	c.SetMaxAge(int(cookieLifetime / time.Second))
	rc.Response.Header.SetCookie(c)
	redirect(rc, next)
}

// signOut clears the cookie.
func (u *UI) signOut(rc *fasthttp.RequestCtx) {
	if !sameOrigin(rc) {
		plainError(rc, "cross-site request refused", fasthttp.StatusForbidden)
		return
	}
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(cookieName)
	c.SetPath("/ui")
	c.SetHTTPOnly(true)
	c.SetSecure(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	c.SetExpire(fasthttp.CookieExpireDelete)
	rc.Response.Header.SetCookie(c)
	redirect(rc, "/ui/login")
}

// safeNext keeps a sign-in's return path on the dashboard.
func safeNext(p string) string {
	if !strings.HasPrefix(p, "/ui/") || strings.HasPrefix(p, "/ui//") || strings.ContainsAny(p, "\\\r\n") {
		return "/ui/boots"
	}
	return p
}
