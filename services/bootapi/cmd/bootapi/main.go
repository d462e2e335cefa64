// Command bootapi serves iPXE scripts, installer callbacks and the bootapi gRPC API.
package main

import (
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/bootapi"
)

func main() { daemon.Run(bootapi.Component()) }
