// Package tftptest holds tftpd's test helpers: an ArtifactService that serves
// in-memory artifacts over real gRPC and records their metadata in etcd the way
// artifactstore does, so tftpd's gRPC client, cache and etcd watch are exercised
// end to end, and a stop/restart of that server can be staged.
package tftptest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"sync"
	"testing"

	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Artifacts is a minimal ArtifactService (Stat, Read) over real gRPC.
type Artifacts struct {
	artifactstorev1.UnimplementedArtifactServiceServer
	t     testing.TB
	st    *store.Store
	mu    sync.Mutex
	blobs map[string][]byte
	reads map[string]int
	addr  string
	gs    *grpc.Server
	done  chan struct{}
}

// StartArtifacts serves on a free loopback port; it stops when the test ends.
func StartArtifacts(t testing.TB, st *store.Store) *Artifacts {
	t.Helper()
	a := &Artifacts{t: t, st: st, blobs: map[string][]byte{}, reads: map[string]int{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = lis.Addr().String()
	a.serve(lis)
	t.Cleanup(a.Stop)
	return a
}

func (a *Artifacts) serve(lis net.Listener) {
	a.gs = grpc.NewServer()
	artifactstorev1.RegisterArtifactServiceServer(a.gs, a)
	done := make(chan struct{})
	a.done = done
	gs := a.gs
	go func() { gs.Serve(lis); close(done) }()
}

// Addr is the gRPC address.
func (a *Artifacts) Addr() string { return a.addr }

// Stop stops the server (connections are cut).
func (a *Artifacts) Stop() {
	if a.gs != nil {
		a.gs.Stop()
		<-a.done
		a.gs = nil
	}
}

// Restart serves again on the same address.
func (a *Artifacts) Restart() {
	a.t.Helper()
	lis, err := net.Listen("tcp", a.addr)
	if err != nil {
		a.t.Fatalf("restart artifacts on %s: %v", a.addr, err)
	}
	a.serve(lis)
}

// Put stores content under name and records its metadata in etcd.
func (a *Artifacts) Put(name string, content []byte) string {
	a.t.Helper()
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	a.mu.Lock()
	a.blobs[name] = append([]byte(nil), content...)
	a.mu.Unlock()
	if a.st != nil {
		if _, err := a.st.Put(context.Background(), store.Key("artifacts", name), a.meta(name, content)); err != nil {
			a.t.Fatalf("put artifact metadata: %v", err)
		}
	}
	return sha
}

// Reads is how many Read calls name got.
func (a *Artifacts) Reads(name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reads[name]
}

func (a *Artifacts) meta(name string, b []byte) *artifactstorev1.Artifact {
	sum := sha256.Sum256(b)
	return &artifactstorev1.Artifact{Name: name, Sha256: hex.EncodeToString(sum[:]), Size: int64(len(b))}
}

// Stat implements ArtifactService.
func (a *Artifacts) Stat(_ context.Context, req *artifactstorev1.StatRequest) (*artifactstorev1.StatResponse, error) {
	a.mu.Lock()
	b, ok := a.blobs[req.GetName()]
	a.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "artifact %q not found", req.GetName())
	}
	return &artifactstorev1.StatResponse{Artifact: a.meta(req.GetName(), b), Local: true}, nil
}

// Read implements ArtifactService.
func (a *Artifacts) Read(req *artifactstorev1.ReadRequest, stream grpc.ServerStreamingServer[artifactstorev1.ReadResponse]) error {
	a.mu.Lock()
	b, ok := a.blobs[req.GetName()]
	a.reads[req.GetName()]++
	a.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "artifact %q not found", req.GetName())
	}
	if err := stream.Send(&artifactstorev1.ReadResponse{Artifact: a.meta(req.GetName(), b)}); err != nil {
		return err
	}
	for off := 0; off < len(b); off += 256 << 10 {
		end := min(off+256<<10, len(b))
		if err := stream.Send(&artifactstorev1.ReadResponse{Chunk: b[off:end]}); err != nil {
			return err
		}
	}
	return nil
}

// Remove forgets name (the caller deletes the etcd metadata).
func (a *Artifacts) Remove(name string) {
	a.mu.Lock()
	delete(a.blobs, name)
	a.mu.Unlock()
}
