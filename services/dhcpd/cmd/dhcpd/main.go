// Command dhcpd serves DHCP and PXE answers for one site; see docs/dhcpd.md.
//
//	dhcpd --site lab --interface br0 --subnet 198.18.0.0/24 --pool 198.18.0.100-198.18.0.199
package main

import (
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/dhcpd"
)

func main() { daemon.Run(dhcpd.Component()) }
