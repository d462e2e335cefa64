package httpapi

import (
	"context"
	"net/netip"
	"time"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/grubcfg"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// GrubRequest is GRUB's request for its config, which a service (tftpd)
// received and forwards.
type GrubRequest struct {
	// MAC as GRUB named it; Profile a menu choice ("": none).
	MAC, Profile string
	// IP is the address GRUB's request came from.
	IP string
	// Arch, Site and File: the machine's architecture, the forwarding
	// service's site, the file name GRUB asked for.
	Arch, Site, File string
	// Peer is who forwarded it, for the audit log.
	Peer string
}

// GrubConfig answers GRUB's request as the script endpoint answers iPXE's
// from the same address: the same decision, dispatch, session hop and
// sighting; only the language differs.
func (h *Handler) GrubConfig(ctx context.Context, req GrubRequest) (script.Script, error) {
	mac, err := macaddr.Normalize(req.MAC)
	if err != nil {
		return script.Script{}, apierr.InvalidArgument("mac", "%v", err)
	}
	ip, err := netip.ParseAddr(req.IP)
	if err != nil {
		return script.Script{}, apierr.InvalidArgument("client_ip", "%v", err)
	}
	// The request's span is tftpd's call (within the tftp hop); the hop is,
	// like every hop, a child of the boot session's root.
	ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	return h.serve(ctx, bootRequest{
		mac: mac, profile: req.Profile, ip: ip.Unmap().String(), peer: req.IP + " via " + req.Peer, arch: req.Arch, site: req.Site,
		facts: state.Facts{IP: ip.Unmap().String(), Arch: req.Arch},
		attrs: []attribute.KeyValue{attribute.String("bootchain.loader", "grub"), attribute.String("tftp.file", req.File)},
	}, grubFormat{h.grub, req.Arch}), nil
}

type grubFormat struct {
	r    *grubcfg.Renderer
	arch string
}

func (f grubFormat) render(d decide.Decision, tp string, job *script.Job) (script.Script, error) {
	return f.r.Render(d, f.arch, tp, job)
}

func (f grubFormat) wait(mac string, wait time.Duration) (string, error) {
	return grubcfg.Wait(mac, wait)
}
