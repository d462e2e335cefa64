package grpcapi

import (
	"context"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
)

// DiagnoseFunc returns a machine's latest session (with its hops) and its
// diagnosis (nil while the boot goes on); false when it has no session.
type DiagnoseFunc func(ctx context.Context, mac string) (*bootapiv1.BootSession, *bootapiv1.Diagnosis, bool)

// EnableDiagnosis serves DiagnoseMachine with f.
func (a *API) EnableDiagnosis(f DiagnoseFunc) *API {
	a.diagnose = f
	return a
}

// DiagnoseMachine answers where the machine's latest boot stopped and why.
// Readers of sessions may call it (sessions.read), for the sites they may see.
func (a *API) DiagnoseMachine(ctx context.Context, req *bootapiv1.DiagnoseMachineRequest) (*bootapiv1.DiagnoseMachineResponse, error) {
	if a.diagnose == nil {
		return a.UnimplementedSessionServiceServer.DiagnoseMachine(ctx, req)
	}
	mac, err := validate.MAC("mac", req.GetMac())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	s, d, ok := a.diagnose(ctx, mac)
	if !ok {
		return nil, apierr.NotFound("boot session of machine", mac)
	}
	if err := auth.RequireSite(ctx, a.sessionSite(s)); err != nil {
		return nil, err
	}
	return &bootapiv1.DiagnoseMachineResponse{Session: s, Diagnosis: d}, nil
}
