// Command artifactstore serves bootchain artifacts (kernels, initrds, iPXE
// binaries) over HTTP and gRPC; with --origin it is a pull-through site replica.
//
//	artifactstore --data-dir /var/lib/bootchain/artifactstore --site lab
package main

import (
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/artifactstore"
)

func main() { daemon.Run(artifactstore.Component()) }
