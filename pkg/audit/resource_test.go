package audit

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// request builds a message of a made-up request type:
//
//	message Req { Cred token = 1; Cred api_key = 2; Obj object = 3; string password = 4; }
//	message Cred { string name = 1; string id = 2; }
//	message Obj { string mac = 1; string site = 2; }
func request(t *testing.T) (req protoreflect.Message, cred, obj protoreflect.MessageDescriptor) {
	t.Helper()
	str, msg := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	field := func(name string, n int32, typ *descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: typ, Label: opt, JsonName: proto.String(name)}
		if typeName != "" {
			f.TypeName = proto.String(".t.v1." + typeName)
		}
		return f
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("t/v1/t.proto"), Package: proto.String("t.v1"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Req"), Field: []*descriptorpb.FieldDescriptorProto{
				field("token", 1, msg, "Cred"), field("api_key", 2, msg, "Cred"), field("object", 3, msg, "Obj"), field("password", 4, str, ""),
			}},
			{Name: proto.String("Cred"), Field: []*descriptorpb.FieldDescriptorProto{field("name", 1, str, ""), field("id", 2, str, "")}},
			{Name: proto.String("Obj"), Field: []*descriptorpb.FieldDescriptorProto{field("mac", 1, str, ""), field("site", 2, str, "")}},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ms := fd.Messages()
	return dynamicpb.NewMessage(ms.ByName("Req")), ms.ByName("Cred"), ms.ByName("Obj")
}

// TestResourceSkipsSecrets checks that the resource comes from the request's
// object, never from a field whose name says it holds a credential, even when
// that field comes first and names something.
func TestResourceSkipsSecrets(t *testing.T) {
	req, credD, objD := request(t)
	set := func(m protoreflect.Message, name, v string) {
		m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(name)), protoreflect.ValueOfString(v))
	}
	for _, f := range []string{"token", "api_key"} {
		c := dynamicpb.NewMessage(credD)
		set(c, "name", "SECRET-"+f)
		set(c, "id", "SECRET-"+f)
		req.Set(req.Descriptor().Fields().ByName(protoreflect.Name(f)), protoreflect.ValueOfMessage(c))
	}
	set(req, "password", "SECRET-password")
	if res, site := resourceOf(req); res != "" || site != "" {
		t.Fatalf("without an object: resource %q site %q, want none", res, site)
	}
	obj := dynamicpb.NewMessage(objD)
	set(obj, "mac", "52:54:00:00:00:01")
	set(obj, "site", "lab")
	req.Set(req.Descriptor().Fields().ByName("object"), protoreflect.ValueOfMessage(obj))
	if res, site := resourceOf(req); res != "52:54:00:00:00:01" || site != "lab" {
		t.Fatalf("resource %q site %q, want the object's MAC and site", res, site)
	}
}

func TestTokenID(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer bct_0123456789abcdef_c2VjcmV0":  "0123456789abcdef",
		"bearer  bct_0123456789abcdef_":         "0123456789abcdef",
		"Bearer bct_0123456789ABCDEF_c2VjcmV0":  "",
		"Bearer bct_0123456789abcde_c2VjcmV0":   "",
		"Basic bct_0123456789abcdef_c2VjcmV0":   "",
		"Bearer 0123456789abcdef_c2VjcmV0xxxxx": "",
	} {
		if got, _ := tokenID(h); got != want {
			t.Errorf("tokenID(%q) = %q, want %q", h, got, want)
		}
	}
}

// FuzzTokenID: what tokenID returns is 16 hex digits that came before the
// secret, never any part of the secret.
func FuzzTokenID(f *testing.F) {
	for _, s := range []string{"Bearer bct_0123456789abcdef_c2VjcmV0", "Bearer bct__", "bearer bct_0123456789abcdef_", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		id, ok := tokenID(h)
		if !ok {
			return
		}
		if len(id) != 16 || !strings.Contains(h, "bct_"+id+"_") {
			t.Fatalf("tokenID(%q) = %q", h, id)
		}
		_, secret, _ := strings.Cut(h, "bct_"+id+"_")
		if secret != "" && strings.Contains(id, secret) {
			t.Fatalf("tokenID(%q) = %q holds the secret", h, id)
		}
	})
}
