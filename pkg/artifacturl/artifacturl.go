// Package artifacturl builds the HTTP URLs of artifacts on an artifactstore, for the
// services that hand them to machines (bootapi renders them into iPXE scripts, dhcpd
// gives them to UEFI HTTP-boot clients).
//
//	artifacturl.HTTPURL("http://198.18.0.1:8081", "debian/12/linux", s.Traceparent())
//	// http://198.18.0.1:8081/artifacts/debian/12/linux?traceparent=00-...
package artifacturl

import (
	"net/url"
	"strings"
)

// PathPrefix is the path under which an artifactstore serves artifacts.
const PathPrefix = "/artifacts/"

// HTTPURL returns <base>/artifacts/<name>?traceparent=<traceparent>: each path
// segment of name escaped, the traceparent query parameter left out when empty. base
// is the artifactstore's root URL ("http://host:8081"); a trailing slash is ignored.
func HTTPURL(base, name, traceparent string) string {
	var b strings.Builder
	b.WriteString(strings.TrimRight(base, "/"))
	b.WriteString(PathPrefix)
	for i, seg := range strings.Split(name, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(url.PathEscape(seg))
	}
	if traceparent != "" {
		b.WriteString("?traceparent=")
		b.WriteString(url.QueryEscape(traceparent))
	}
	return b.String()
}
