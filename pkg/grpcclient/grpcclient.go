// Package grpcclient dials bootchain's gRPC services with the same instrumentation and
// TLS options their servers use, and presents a bearer token when given one.
package grpcclient

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/tlsconf"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Dial returns a client connection to addr (host:port). It does not wait for the
// server: the first call does. With WithToken among opts it refuses to send the
// token in plaintext to an address that is not loopback.
func Dial(addr string, tlsFiles tlsconf.Files, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	tlsCfg, err := tlsFiles.Client()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
		// Peers are bootchain services that restart (upgrades, crashes): reconnect
		// within seconds, not after grpc's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	for _, o := range opts {
		t, ok := o.(tokenOption)
		if !ok {
			base = append(base, o)
			continue
		}
		local := Loopback(addr)
		if tlsCfg == nil && !local {
			return nil, fmt.Errorf("grpc: dial %s: refusing to send a bearer token in plaintext to a non-loopback address; configure TLS (--tls-ca)", addr)
		}
		base = append(base, grpc.WithPerRPCCredentials(bearer{token: t.token, plaintextOK: local}))
	}
	cc, err := grpc.NewClient(addr, base...)
	if err != nil {
		return nil, fmt.Errorf("grpc: dial %s: %w", addr, err)
	}
	return cc, nil
}

// tokenOption is a DialOption that Dial recognises; the embedded option is a no-op.
type tokenOption struct {
	grpc.DialOption
	token string
}

// WithToken makes every call present token ("bct_...") as
// `authorization: Bearer <token>`. An empty token adds nothing. Only Dial
// understands it: given to grpc.NewClient directly it adds nothing either, and
// the server refuses the calls.
func WithToken(token string) grpc.DialOption {
	if token == "" {
		return grpc.EmptyDialOption{}
	}
	return tokenOption{DialOption: grpc.EmptyDialOption{}, token: token}
}

type bearer struct {
	token       string
	plaintextOK bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity makes grpc itself refuse plaintext unless the peer is
// on loopback.
func (b bearer) RequireTransportSecurity() bool { return !b.plaintextOK }

// Loopback reports whether a dial or listen address (host:port, optionally with a
// resolver scheme such as dns:///) names only this host: a loopback IP,
// "localhost", or a unix socket. An empty host (":9080", all interfaces) is not.
func Loopback(addr string) bool {
	if strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "unix-abstract:") {
		return true
	}
	if i := strings.Index(addr, ":///"); i >= 0 {
		addr = addr[i+4:]
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
