// Command artifactstore serves bootchain artifacts (kernels, initrds, iPXE
// binaries) over HTTP and gRPC; with --origin it is a pull-through site replica.
//
//	artifactstore --data-dir /var/lib/bootchain/artifactstore --site lab
//
// Installers' HTTP clients (busybox wget, as in Debian's installer) speak TLS 1.2
// without the signature_algorithms extension, which Go refuses unless
// SHA-1 handshake signatures are allowed; clients that send it (gRPC, curl,
// browsers) negotiate SHA-256 or better as before. See docs/security.md.
//
//go:debug tlssha1=1
package main

import (
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/artifactstore"
)

func main() { daemon.Run(artifactstore.Component()) }
