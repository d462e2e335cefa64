package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	authv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/auth/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// A Permission is "<resource>.<verb>", verb read or write ("jobs.write").
type Permission string

// Resources are the things a permission names.
var Resources = []string{
	"machines", "jobs", "sessions", "profiles", "sites", "artifacts", "leases", "pools", "tftp", "credentials", "audit",
	"bootconfigs",
}

// Verbs are what a permission allows on its resource.
var Verbs = []string{"read", "write"}

// ParsePermission validates s.
func ParsePermission(s string) (Permission, error) {
	res, verb, ok := strings.Cut(s, ".")
	if !ok || !slices.Contains(Resources, res) || !slices.Contains(Verbs, verb) {
		return "", fmt.Errorf("permission %q: want <resource>.<read|write>, resource one of %s", s, strings.Join(Resources, ", "))
	}
	return Permission(s), nil
}

// Resource is the part before the dot.
func (p Permission) Resource() string { r, _, _ := strings.Cut(string(p), "."); return r }

// Verb is the part after the dot.
func (p Permission) Verb() string { _, v, _ := strings.Cut(string(p), "."); return v }

// The role table: the one place that says what each role may do.
//
//	viewer   every *.read but credentials.read and audit.read
//	operator viewer + machines.write, jobs.write
//	admin    everything
//	service  artifacts.read, bootconfigs.write (tftpd rendering GRUB's
//	         config for a machine: BootConfigService)
var roleTable = func() map[Role][]Permission {
	var viewer, all []Permission
	for _, r := range Resources {
		for _, v := range Verbs {
			p := Permission(r + "." + v)
			all = append(all, p)
			if v == "read" && r != "credentials" && r != "audit" && r != "bootconfigs" {
				viewer = append(viewer, p)
			}
		}
	}
	return map[Role][]Permission{
		RoleViewer:   viewer,
		RoleOperator: append(slices.Clone(viewer), "machines.write", "jobs.write"),
		RoleAdmin:    all,
		RoleService:  {"artifacts.read", "bootconfigs.write"},
	}
}()

// Permissions returns what role grants, sorted; none for an unknown role.
func Permissions(role Role) []Permission {
	ps := slices.Clone(roleTable[role])
	slices.Sort(ps)
	return ps
}

// Allows reports whether role grants p.
func (r Role) Allows(p Permission) bool { return slices.Contains(roleTable[r], p) }

// ErrNoPermission is returned for a method that declares no permission: the
// server refuses it (fail closed).
var ErrNoPermission = errors.New("method declares no permission")

var methodPerms sync.Map // full method name -> Permission

// MethodPermission returns the permission the RPC fullMethod ("/pkg.Service/Method",
// as gRPC names it) declares with the bootchain.auth.v1.access option.
func MethodPermission(fullMethod string) (Permission, error) {
	if v, ok := methodPerms.Load(fullMethod); ok {
		return v.(Permission), nil
	}
	// Only found permissions are remembered, so that names a caller makes up
	// cannot grow the map.
	p, err := lookupPermission(fullMethod)
	if err != nil {
		return "", err
	}
	methodPerms.Store(fullMethod, p)
	return p, nil
}

func lookupPermission(fullMethod string) (Permission, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "", fmt.Errorf("%s: %w", fullMethod, ErrNoPermission)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return "", fmt.Errorf("%s: %w", fullMethod, ErrNoPermission)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return "", fmt.Errorf("%s: %w", fullMethod, ErrNoPermission)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return "", fmt.Errorf("%s: %w", fullMethod, ErrNoPermission)
	}
	return DeclaredPermission(md)
}

// DeclaredPermission is the permission md declares.
func DeclaredPermission(md protoreflect.MethodDescriptor) (Permission, error) {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil || !proto.HasExtension(opts, authv1.E_Access) {
		return "", fmt.Errorf("%s: %w", md.FullName(), ErrNoPermission)
	}
	a, _ := proto.GetExtension(opts, authv1.E_Access).(*authv1.Access)
	p, err := ParsePermission(a.GetPermission())
	if err != nil {
		return "", fmt.Errorf("%s: %w", md.FullName(), err)
	}
	return p, nil
}
