// Command bootapi serves iPXE scripts, installer callbacks and the bootapi gRPC API.
// Installers' HTTP clients (busybox wget, as in Debian's installer) speak TLS 1.2
// without the signature_algorithms extension, which Go refuses unless
// SHA-1 handshake signatures are allowed; clients that send it (gRPC, curl,
// browsers) negotiate SHA-256 or better as before. See docs/security.md.
//
//go:debug tlssha1=1
package main

import (
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/bootapi"
)

func main() { daemon.Run(bootapi.Component()) }
