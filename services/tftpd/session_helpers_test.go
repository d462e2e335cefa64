package tftpd_test

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/bootchain/bootchain/pkg/session"
	"google.golang.org/grpc"
)

func sessionOpenIP(ip string) session.OpenOptions { return session.OpenOptions{IP: ip} }

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func grpcWaitForReady() grpc.CallOption { return grpc.WaitForReady(true) }
