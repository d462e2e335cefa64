package bootapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func artifact(name string) *bootapiv1.ArtifactRef {
	return &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: name}}
}

// A profile names artifacts the catalog has, or URLs: one that names a missing
// artifact is refused when written, naming the field.
func TestProfileArtifactsExist(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t)
	ctx := context.Background()
	url := &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Url{Url: "https://example.org/linux"}}
	for name, tc := range map[string]struct {
		call        func() error
		field, desc string
	}{
		"missing kernel": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "p", Kernel: artifact("nosuch/kernel")}})
			return err
		}, "profile.kernel", `artifact "nosuch/kernel" does not exist`},
		"missing initrd": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
				Name: "p", Kernel: artifact("debian/linux"), Initrds: []*bootapiv1.ArtifactRef{artifact("debian/initrd.gz"), artifact("nosuch/fw")}}})
			return err
		}, "profile.initrds[1]", `artifact "nosuch/fw" does not exist`},
		"updated to a missing kernel": {func() error {
			_, err := h.profiles.UpdateProfile(ctx, &bootapiv1.UpdateProfileRequest{
				Profile: &bootapiv1.Profile{Name: "debian-12", Kernel: artifact("nosuch/kernel")}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"kernel"}}})
			return err
		}, "profile.kernel", `artifact "nosuch/kernel" does not exist`},
		"pinned to the current digest": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
				Name: "pinned", Kernel: artifact("debian/linux@sha256:" + strings.Repeat("0", 64)), Initrds: []*bootapiv1.ArtifactRef{artifact("debian/initrd.gz@sha256:" + strings.Repeat("0", 64))}}})
			return err
		}, "", ""},
		"pinned to other content": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
				Name: "p", Kernel: artifact("debian/linux"), Initrds: []*bootapiv1.ArtifactRef{artifact("debian/initrd.gz@sha256:" + strings.Repeat("1", 64))}}})
			return err
		}, "profile.initrds[0]", `artifact "debian/initrd.gz" holds sha256 ` + strings.Repeat("0", 64) + `, not the pinned ` + strings.Repeat("1", 64)},
		"updated to a stale pin": {func() error {
			_, err := h.profiles.UpdateProfile(ctx, &bootapiv1.UpdateProfileRequest{
				Profile: &bootapiv1.Profile{Name: "debian-12", Kernel: artifact("debian/linux@sha256:" + strings.Repeat("a", 64))}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"kernel"}}})
			return err
		}, "profile.kernel", `artifact "debian/linux" holds sha256 ` + strings.Repeat("0", 64) + `, not the pinned ` + strings.Repeat("a", 64)},
		"malformed pin": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "p", Kernel: artifact("debian/linux@sha256:ABC")}})
			return err
		}, "profile.kernel.artifact", `"debian/linux@sha256:ABC": a pin must be @sha256: and 64 lower-case hex digits`},
		"a URL is not looked up": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "by-url", Kernel: url}})
			return err
		}, "", ""},
		"existing artifacts": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
				Name: "q", Kernel: artifact("debian/linux"), Initrds: []*bootapiv1.ArtifactRef{artifact("debian/initrd.gz")}}})
			return err
		}, "", ""},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || apierr.FieldOf(err) != tc.field {
				t.Fatalf("got %v (field %q), want InvalidArgument naming %q", err, apierr.FieldOf(err), tc.field)
			}
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok && br.GetFieldViolations()[0].GetDescription() != tc.desc {
					t.Errorf("description %q, want %q", br.GetFieldViolations()[0].GetDescription(), tc.desc)
				}
			}
		})
	}
	// A profile whose artifact went away can still be changed elsewhere.
	if err := h.st.Delete(ctx, store.Key("artifacts", "debian/linux"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.profiles.UpdateProfile(ctx, &bootapiv1.UpdateProfileRequest{
		Profile: &bootapiv1.Profile{Name: "debian-12", Description: "Debian 12 (old)"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description"}}}); err != nil {
		t.Fatalf("description of a profile whose kernel is gone: %v", err)
	}
}
