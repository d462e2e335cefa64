package grpcapi

import (
	"context"

	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// Site limits: a caller limited to sites acts only on machines (and their jobs
// and sessions) of those sites and on those sites' records. Checks come after
// the resource is found, so that the site is the stored one, never one the
// caller claims; lists leave out what the caller may not see.

// defaultSite is the site of a machine that names none.
func (a *API) defaultSite() string {
	if a.preview != nil && a.preview.DefaultSite != "" {
		return a.preview.DefaultSite
	}
	return "default"
}

// machineSite is the site m belongs to.
func (a *API) machineSite(m *bootapiv1.Machine) string {
	if s := m.GetSite(); s != "" {
		return s
	}
	return a.defaultSite()
}

// macSite is the site of the machine with this MAC: the default site for a MAC
// bootapi has no record of.
func (a *API) macSite(mac string) string {
	if it, ok := a.st.Machines.Get(mac); ok {
		return a.machineSite(it.Value)
	}
	return a.defaultSite()
}

// mayMAC reports whether the caller may see the machine with this MAC.
func (a *API) mayMAC(ctx context.Context, mac string) bool {
	return auth.MaySite(ctx, a.macSite(mac))
}

// requireMAC is RequireSite for the machine with this MAC.
func (a *API) requireMAC(ctx context.Context, mac string) error {
	return auth.RequireSite(ctx, a.macSite(mac))
}

// sessionSite is the site a boot session was recorded at.
func (a *API) sessionSite(s *bootapiv1.BootSession) string {
	if s.GetSite() != "" {
		return s.GetSite()
	}
	return a.macSite(s.GetMac())
}
