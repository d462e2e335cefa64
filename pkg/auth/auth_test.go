package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	_ "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	_ "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	_ "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	_ "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// TestEveryRPCDeclaresPermission walks every bootchain service linked into the
// binary: an RPC added without the access option fails here (and the server
// refuses it at run time).
func TestEveryRPCDeclaresPermission(t *testing.T) {
	methods := 0
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "bootchain.") {
			return true
		}
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				methods++
				p, err := auth.DeclaredPermission(md)
				if err != nil {
					t.Errorf("%s: %v", md.FullName(), err)
					continue
				}
				full := "/" + string(sd.FullName()) + "/" + string(md.Name())
				if got, err := auth.MethodPermission(full); err != nil || got != p {
					t.Errorf("MethodPermission(%s) = %q, %v; want %q", full, got, err, p)
				}
			}
		}
		return true
	})
	// Artifacts 5, jobs 5, machines 6, profiles 5, sessions 2, sites 4,
	// credentials 3, leases 4, tftp 3: a walk that found nothing must not pass.
	if methods < 37 {
		t.Fatalf("walked %d methods; the registry lacks bootchain services", methods)
	}
	if _, err := auth.MethodPermission("/bootchain.bootapi.v1.JobService/NoSuchMethod"); err == nil {
		t.Fatal("an unknown method has a permission")
	}
}

func TestRoleTable(t *testing.T) {
	cases := []struct {
		role  auth.Role
		perm  auth.Permission
		allow bool
	}{
		{auth.RoleViewer, "machines.read", true},
		{auth.RoleViewer, "leases.read", true},
		{auth.RoleViewer, "credentials.read", false},
		{auth.RoleViewer, "audit.read", false},
		{auth.RoleViewer, "jobs.write", false},
		{auth.RoleOperator, "jobs.write", true},
		{auth.RoleOperator, "machines.write", true},
		{auth.RoleOperator, "profiles.write", false},
		{auth.RoleOperator, "sites.write", false},
		{auth.RoleOperator, "credentials.read", false},
		{auth.RoleAdmin, "credentials.write", true},
		{auth.RoleAdmin, "audit.read", true},
		{auth.RoleService, "artifacts.read", true},
		{auth.RoleService, "artifacts.write", false},
		{auth.RoleService, "machines.read", false},
		{auth.Role("root"), "machines.read", false},
	}
	for _, c := range cases {
		if got := c.role.Allows(c.perm); got != c.allow {
			t.Errorf("%s allows %s = %v, want %v", c.role, c.perm, got, c.allow)
		}
	}
	if n := len(auth.Permissions(auth.RoleAdmin)); n != 2*len(auth.Resources) {
		t.Errorf("admin has %d permissions, want %d", n, 2*len(auth.Resources))
	}
}

func TestTokenRoundTrip(t *testing.T) {
	s, rec, err := auth.NewToken(auth.TokenSpec{Name: "ci-bot", Role: auth.RoleOperator, Sites: []string{"a", "a", "b"}, TTL: time.Hour}, time.Unix(1000, 0))
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := auth.ParseToken(s)
	if err != nil {
		t.Fatalf("ParseToken(NewToken()): %v", err)
	}
	if id != rec.GetId() || string(auth.HashSecret(secret)) != string(rec.GetSecretSha256()) {
		t.Fatal("parsed token does not match its record")
	}
	if strings.Contains(rec.String(), s[len("bct_")+17:]) {
		t.Fatal("the record holds the secret")
	}
	if got := rec.GetSites(); len(got) != 2 {
		t.Errorf("sites %v: want a, b", got)
	}
	if !rec.GetExpireTime().AsTime().Equal(time.Unix(1000+3600, 0)) {
		t.Errorf("expiry %v", rec.GetExpireTime().AsTime())
	}
	for _, bad := range []auth.TokenSpec{
		{Name: "", Role: auth.RoleAdmin},
		{Name: "x y", Role: auth.RoleAdmin},
		{Name: "x", Role: "root"},
		{Name: "x", Role: "Admin"},
		{Name: "x", Role: auth.RoleAdmin, Sites: []string{"a/b"}},
		{Name: "x", Role: auth.RoleAdmin, TTL: -time.Second},
	} {
		if _, _, err := auth.NewToken(bad, time.Now()); err == nil {
			t.Errorf("NewToken(%+v) accepted", bad)
		}
	}
}

func TestParseTokenRejects(t *testing.T) {
	good, _, _ := auth.NewToken(auth.TokenSpec{Name: "x", Role: auth.RoleViewer}, time.Now())
	for _, s := range []string{
		"", "bct_", "Bearer " + good, good + "A", good[:len(good)-1],
		"bcx" + good[3:], strings.ToUpper(good[:20]) + good[20:],
		good[:4] + "0123456789abcdeg" + good[20:],
		good[:20] + "-" + good[21:],
		good[:len(good)-1] + "=",
	} {
		if _, _, err := auth.ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) accepted", s)
		} else if len(s) > 20 && strings.Contains(err.Error(), s) {
			t.Errorf("error %q quotes the input", err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	good, _, _ := auth.NewToken(auth.TokenSpec{Name: "x", Role: auth.RoleViewer}, time.Now())
	for _, s := range []string{good, "", "bct_0123456789abcdef_", good + "x", strings.ReplaceAll(good, "_", "-")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := auth.ParseToken(s)
		if err != nil {
			if len(s) > 20 && strings.Contains(err.Error(), s) {
				t.Fatalf("error quotes the input: %v", err)
			}
			return
		}
		if !auth.ValidTokenID(id) || len(secret) != 32 {
			t.Fatalf("accepted id %q, %d-byte secret", id, len(secret))
		}
		if back := auth.FormatToken(id, secret); back != s {
			t.Fatalf("FormatToken(ParseToken(%q)) = %q", s, back)
		}
	})
}

func FuzzParsePermission(f *testing.F) {
	for _, s := range []string{"jobs.write", "machines.read", "credentials.read", "jobs", ".read", "jobs.write.x", "JOBS.read", "audit.read"} {
		f.Add(s, "viewer")
	}
	f.Add("artifacts.read", "service")
	f.Fuzz(func(t *testing.T, s, role string) {
		p, err := auth.ParsePermission(s)
		if err != nil {
			r, rerr := auth.ParseRole(role)
			if rerr == nil && r.Allows(auth.Permission(s)) {
				t.Fatalf("role %s allows invalid permission %q", r, s)
			}
			return
		}
		if string(p) != p.Resource()+"."+p.Verb() {
			t.Fatalf("%q splits into %q and %q", s, p.Resource(), p.Verb())
		}
		if !auth.RoleAdmin.Allows(p) {
			t.Fatalf("admin lacks %s", p)
		}
		r, rerr := auth.ParseRole(role)
		if rerr != nil {
			return
		}
		// Every role's grants are within admin's, and only admin writes outside
		// machines and jobs (the service role: boot configs it fetches for
		// machines) or reads credentials and audit.
		if r.Allows(p) && r != auth.RoleAdmin {
			if p.Verb() == "write" && p.Resource() != "machines" && p.Resource() != "jobs" && (r != auth.RoleService || p.Resource() != "bootconfigs") {
				t.Fatalf("%s may %s", r, p)
			}
			if p.Resource() == "credentials" || p.Resource() == "audit" {
				t.Fatalf("%s may %s", r, p)
			}
		}
	})
}

func TestRequireSite(t *testing.T) {
	ctx := context.Background()
	if err := auth.RequireSite(ctx, "a"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("no identity: %v; want PermissionDenied (fail closed)", err)
	}
	limited := auth.NewContext(ctx, auth.Identity{Name: "ops", Kind: auth.KindToken, Role: auth.RoleOperator, Sites: []string{"a"}})
	if err := auth.RequireSite(limited, "a"); err != nil {
		t.Errorf("own site: %v", err)
	}
	if err := auth.RequireSite(limited, "b"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `site "b"`) {
		t.Errorf("other site: %v", err)
	}
	if auth.MaySite(limited, "b") || !auth.MaySite(limited, "a") || auth.MaySite(ctx, "a") {
		t.Error("MaySite")
	}
	all := auth.NewContext(ctx, auth.Identity{Name: "admin", Kind: auth.KindCert, Role: auth.RoleAdmin})
	if err := auth.RequireSite(all, "anything"); err != nil {
		t.Errorf("unlimited identity: %v", err)
	}
}
