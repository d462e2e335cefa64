package audit

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// recordTimeout bounds how long a call's answer waits for its event.
const recordTimeout = 10 * time.Second

// ServerOptions are the interceptors that audit a gRPC server's calls, in two
// halves: outer goes before authentication (so that it sees the calls
// authentication refuses), inner after it (where the caller's identity is
// known). grpcserver installs them so; a server with no authentication can chain
// outer and inner directly.
//
// Audited: every call to a method whose proto does not declare
// idempotency_level = NO_SIDE_EFFECTS, and every call, to any method, refused
// with Unauthenticated or PermissionDenied. Health and reflection are reads.
func (l *Log) ServerOptions() (outer, inner []grpc.ServerOption) {
	return []grpc.ServerOption{
			grpc.ChainUnaryInterceptor(l.unaryOuter),
			grpc.ChainStreamInterceptor(l.streamOuter),
		}, []grpc.ServerOption{
			grpc.ChainUnaryInterceptor(unaryInner),
			grpc.ChainStreamInterceptor(streamInner),
		}
}

// call is what the outer interceptor learns of a call from further in.
type call struct {
	mu       sync.Mutex
	identity string
	resource string
	site     string
}

type callKey struct{}

func (c *call) setIdentity(ctx context.Context) {
	if id, ok := auth.FromContext(ctx); ok {
		c.mu.Lock()
		c.identity = id.String()
		c.mu.Unlock()
	}
}

func (c *call) setRequest(m any) {
	msg, ok := m.(proto.Message)
	if !ok {
		return
	}
	res, site := resourceOf(msg.ProtoReflect())
	c.mu.Lock()
	if c.resource == "" {
		c.resource = res
	}
	if c.site == "" {
		c.site = site
	}
	c.mu.Unlock()
}

func unaryInner(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.setIdentity(ctx)
	}
	return next(ctx, req)
}

func streamInner(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if c, ok := ss.Context().Value(callKey{}).(*call); ok {
		c.setIdentity(ss.Context())
	}
	return next(srv, ss)
}

func (l *Log) unaryOuter(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	write := isWrite(info.FullMethod)
	c := &call{}
	c.setRequest(req)
	ctx = context.WithValue(ctx, callKey{}, c)
	var revs *store.Revisions
	if write {
		ctx, revs = store.WithRevisions(ctx)
	}
	resp, err := next(ctx, req)
	return resp, l.finish(ctx, info.FullMethod, write, c, revs, err)
}

func (l *Log) streamOuter(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	write := isWrite(info.FullMethod)
	c := &call{}
	ctx := context.WithValue(ss.Context(), callKey{}, c)
	var revs *store.Revisions
	if write {
		ctx, revs = store.WithRevisions(ctx)
	}
	err := next(srv, &stream{ServerStream: ss, ctx: ctx, c: c})
	return l.finish(ctx, info.FullMethod, write, c, revs, err)
}

// stream gives the handler the audited context and notes the resource the
// first message names (an upload's header).
type stream struct {
	grpc.ServerStream
	ctx  context.Context
	c    *call
	seen bool
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && !s.seen {
		s.seen = true
		s.c.setRequest(m)
	}
	return err
}

// finish records the call when it is audited and returns the error to answer.
func (l *Log) finish(ctx context.Context, method string, write bool, c *call, revs *store.Revisions, err error) error {
	code := status.Code(err)
	denied := code == codes.Unauthenticated || code == codes.PermissionDenied
	if !write && !denied {
		return err
	}
	ev := Event{Action: method, Outcome: code.String()}
	if id, ok := auth.FromContext(ctx); ok {
		ev.Identity = id.String()
	}
	c.mu.Lock()
	if c.identity != "" {
		ev.Identity = c.identity
	}
	ev.Resource, ev.Site = c.resource, c.site
	c.mu.Unlock()
	if ev.Identity == "" && denied {
		ev.Identity = claimed(ctx)
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		ev.Peer = p.Addr.String()
	}
	if revs != nil {
		ev.Revision = revs.Last()
	}
	if err != nil {
		ev.Detail = status.Convert(err).Message()
	}
	// The caller going away does not excuse the event: it is written on a
	// context of its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	var rerr error
	if denied {
		_, rerr = l.RecordRefused(rctx, ev)
	} else {
		rerr = l.Record(rctx, ev)
	}
	if rerr != nil {
		if denied || err != nil {
			return err
		}
		// The change is made but not accounted for: the caller must not take it
		// for a clean success. Unavailable, with the revision to check against.
		return status.Errorf(codes.Unavailable, "audit log unavailable: the change was applied at etcd revision %d but its audit event was not written (yet: it may still be, while etcd recovers)", ev.Revision)
	}
	return err
}

// writes caches, per full method, whether calls to it are audited.
var writes sync.Map // string -> bool

// isWrite reports whether fullMethod ("/pkg.Service/Method") may change state:
// its proto does not declare it free of side effects. Methods outside the proto
// registry and the health and reflection services are not.
func isWrite(fullMethod string) bool {
	if v, ok := writes.Load(fullMethod); ok {
		return v.(bool)
	}
	w := methodWrites(fullMethod)
	writes.Store(fullMethod, w)
	return w
}

func methodWrites(fullMethod string) bool {
	name := strings.TrimPrefix(fullMethod, "/")
	svc, method, ok := strings.Cut(name, "/")
	if !ok || strings.HasPrefix(svc, "grpc.health.") || strings.HasPrefix(svc, "grpc.reflection.") {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc + "." + method))
	if err != nil {
		return false
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return false
	}
	opts, _ := md.Options().(*descriptorpb.MethodOptions)
	return opts.GetIdempotencyLevel() != descriptorpb.MethodOptions_NO_SIDE_EFFECTS
}

// resourceFields name the object a request acts on, in order of preference.
var resourceFields = []protoreflect.Name{"name", "mac", "id", "ip"}

// resourceOf finds the resource and site a request names: a string field named as
// in resourceFields (or "site") at the top level, else in a message field one
// level down (CreateProfileRequest.profile.name). Fields whose name suggests a
// secret are never read or entered.
func resourceOf(m protoreflect.Message) (resource, site string) {
	resource, site = stringFields(m)
	if resource != "" && site != "" {
		return resource, site
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() || secret(fd.Name()) || !m.Has(fd) {
			continue
		}
		r, s := stringFields(m.Get(fd).Message())
		if resource == "" {
			resource = r
		}
		if site == "" {
			site = s
		}
	}
	return resource, site
}

func stringFields(m protoreflect.Message) (resource, site string) {
	fields := m.Descriptor().Fields()
	get := func(n protoreflect.Name) string {
		fd := fields.ByName(n)
		if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.IsMap() {
			return ""
		}
		return m.Get(fd).String()
	}
	for _, n := range resourceFields {
		if v := get(n); v != "" {
			resource = v
			break
		}
	}
	return resource, get("site")
}

// secret reports whether a field's name suggests it holds a credential.
func secret(n protoreflect.Name) bool {
	s := strings.ToLower(string(n))
	for _, w := range []string{"token", "secret", "password", "key", "credential"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}
