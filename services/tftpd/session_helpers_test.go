package tftpd_test

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/bootchain/bootchain/pkg/session"
)

func sessionOpenIP(ip string) session.OpenOptions { return session.OpenOptions{IP: ip} }

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
