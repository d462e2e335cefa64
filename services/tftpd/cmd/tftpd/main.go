// Command tftpd serves a site's boot files over TFTP from artifactstore, through a
// local disk cache.
//
//	tftpd --data-dir /var/lib/bootchain/tftpd --site lab --artifactstore 10.0.0.5:9081
package main

import (
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/tftpd"
)

func main() { daemon.Run(tftpd.Component()) }
