package grpcapi

import (
	"context"
	"strings"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/services/bootapi/internal/httpapi"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
	"google.golang.org/grpc"
)

// BootConfigAPI implements BootConfigService: boot loader configs a service
// fetches for a machine (tftpd, for GRUB).
type BootConfigAPI struct {
	bootapiv1.UnimplementedBootConfigServiceServer
	st          *state.State
	handler     *httpapi.Handler
	defaultSite string
}

// NewBootConfig returns the service; h answers the requests as it answers
// machines' own.
func NewBootConfig(st *state.State, h *httpapi.Handler, defaultSite string) *BootConfigAPI {
	return &BootConfigAPI{st: st, handler: h, defaultSite: defaultSite}
}

// Register adds the service to s.
func (a *BootConfigAPI) Register(s *grpc.Server) { bootapiv1.RegisterBootConfigServiceServer(s, a) }

// RenderGrubConfig answers GRUB's request that the caller forwards. The
// caller is a service (permission bootconfigs.write); a site-limited one only
// for machines of its sites: the machine's site, or for a MAC bootapi has no
// record of, the site the caller names (its own).
func (a *BootConfigAPI) RenderGrubConfig(ctx context.Context, req *bootapiv1.RenderGrubConfigRequest) (*bootapiv1.RenderGrubConfigResponse, error) {
	mac, err := macaddr.Normalize(req.GetMac())
	if err != nil {
		return nil, apierr.InvalidArgument("mac", "%v", err)
	}
	if req.GetSite() != "" {
		if err := validate.Site("site", req.GetSite()); err != nil {
			return nil, apierr.FromError(err)
		}
	}
	site := req.GetSite()
	if it, ok := a.st.Machines.Get(mac); ok {
		site = it.Value.GetSite()
	}
	if site == "" {
		site = a.defaultSite
	}
	if err := auth.RequireSite(ctx, site); err != nil {
		return nil, err
	}
	if p := req.GetProfile(); p != "" {
		if err := validate.Name("profile", p); err != nil {
			return nil, apierr.FromError(err)
		}
	}
	if len(req.GetArch()) > 32 || strings.ContainsFunc(req.GetArch(), func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return nil, apierr.InvalidArgument("arch", "want up to 32 printable ASCII characters")
	}
	if len(req.GetFile()) > 255 {
		return nil, apierr.InvalidArgument("file", "longer than 255 bytes")
	}
	peer := "service"
	if id, ok := auth.FromContext(ctx); ok {
		peer = id.Name
	}
	s, err := a.handler.GrubConfig(ctx, httpapi.GrubRequest{
		MAC: mac, Profile: req.GetProfile(), IP: req.GetClientIp(), Arch: req.GetArch(), Site: req.GetSite(), File: req.GetFile(), Peer: peer,
	})
	if err != nil {
		return nil, err
	}
	return &bootapiv1.RenderGrubConfigResponse{Config: s.Head + s.Body, Detail: s.Detail}, nil
}
