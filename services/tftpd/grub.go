package tftpd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/artifactref"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grub"
	"github.com/bootchain/bootchain/services/tftpd/internal/cache"
	"github.com/bootchain/bootchain/services/tftpd/internal/source"
	"github.com/bootchain/bootchain/services/tftpd/internal/transfer"
)

// What resolve returns for the files tftpd does not take from its cache as
// they are. Artifact names have no ':' (letters, digits, '.', '_', '-', '/'),
// so none of these is an artifact's.
const (
	// grubBootstrap is grub/grub.cfg, the same for every machine.
	grubBootstrap = "bootchain:grub.cfg"
	// fromBootAPI prefixes a GRUB config name bootapi renders.
	fromBootAPI = "bootapi:"
)

// grubTimeout bounds bootapi's answer. It is shorter than bootapi's
// dispatchRetryBudget (25 s, sized for iPXE's longer HTTP wait): past it
// tftpd answers the request with an error rather than hold GRUB longer.
const grubTimeout = 12 * time.Second

// ErrPinMismatch: the cache holds other content than a pinned reference
// names (artifactstore answers 409 for the same over HTTP).
var ErrPinMismatch = errors.New("content does not match its pinned sha256")

// resolve is the file chain: the file map (exact, prefix, well-known
// names), then, with a bootapi to ask, GRUB's names: grub/grub.cfg, the
// machine's grub/grub.cfg-<mac> (and a menu choice's), and
// artifacts/<name>[@sha256:<hex>] for the kernel and initrds GRUB's config
// names (package grub).
func (s *Server) resolve(name string) (string, bool) {
	if a, ok := s.current.Load().Resolve(name); ok {
		return a, true
	}
	if s.bootcfg == nil {
		return "", false
	}
	if name == grub.Dir+"/grub.cfg" {
		return grubBootstrap, true
	}
	if _, err := grub.ParseName(name); err == nil {
		return fromBootAPI + name, true
	}
	if rest, ok := strings.CutPrefix(name, grub.ArtifactDir+"/"); ok {
		if ref, err := artifactref.Parse(rest); err == nil && !strings.Contains(ref.Name, ":") {
			return ref.String(), true
		}
	}
	return "", false
}

// open opens what resolve named: GRUB's bootstrap, a config bootapi renders
// for the requesting machine, or an artifact (a pinned one only with the
// content its pin names).
func (s *Server) open(ctx context.Context, artifact string) (*cache.Handle, bool, error) {
	if artifact == grubBootstrap {
		return cache.Bytes(artifact, []byte(grub.Bootstrap())), true, nil
	}
	if name, ok := strings.CutPrefix(artifact, fromBootAPI); ok {
		return s.grubConfig(ctx, name)
	}
	if !strings.Contains(artifact, artifactref.DigestPrefix) {
		return s.cache.Open(ctx, artifact)
	}
	ref, err := artifactref.Parse(artifact)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s", source.ErrNotFound, artifact)
	}
	h, hit, err := s.cache.Open(ctx, ref.Name)
	if err != nil {
		return nil, hit, err
	}
	if h.SHA256 != ref.SHA256 {
		h.Close()
		return nil, hit, fmt.Errorf("%w: %s holds %s, pinned %s", ErrPinMismatch, ref.Name, h.SHA256, ref.SHA256)
	}
	return h, hit, nil
}

// grubConfig asks bootapi for the config of GRUB's request name, as the
// machine at the transfer's client address: bootapi decides (and trusts, or
// not, that address with the machine's pending job) as for the machine's
// own request.
func (s *Server) grubConfig(ctx context.Context, name string) (*cache.Handle, bool, error) {
	req, err := grub.ParseName(name)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s", source.ErrNotFound, name)
	}
	ip := transfer.ClientIP(ctx)
	if ip == "" {
		return nil, false, errors.New("GRUB config outside a transfer")
	}
	ctx, cancel := context.WithTimeout(ctx, grubTimeout)
	defer cancel()
	resp, err := s.bootcfg.RenderGrubConfig(ctx, &bootapiv1.RenderGrubConfigRequest{
		Mac: req.MAC, ClientIp: ip, Profile: req.Profile, Site: s.cfg.Site, File: name,
	})
	if err != nil {
		s.grubFailures.Add(1)
		return nil, false, fmt.Errorf("bootapi: %w", err)
	}
	s.grubConfigs.Add(1)
	return cache.Bytes(name, []byte(resp.GetConfig())), false, nil
}
