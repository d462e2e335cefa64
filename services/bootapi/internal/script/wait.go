package script

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/ipxe"
)

// configChain is the config URL with the machine's facts as iPXE expansions
// (BootstrapParams), ready for a chain command.
func configChain(configURL *url.URL) ipxe.Arg {
	var q []string
	for _, p := range BootstrapParams {
		q = append(q, p.Key+"=${"+p.Setting+":"+p.Type+"}")
	}
	u := *configURL
	u.RawQuery = ""
	return ipxe.Raw(ipxe.EscapeURL(u.String()) + "?" + strings.Join(q, "&"))
}

// Wait renders what a machine gets while its site has as many boots in flight
// as it may (admission control): wait, then ask the config URL again, as the
// bootstrap does. A machine that cannot reach bootapi then falls back to the
// next boot device, as from the bootstrap. wait is rounded up to whole seconds
// (iPXE's sleep).
func Wait(configURL *url.URL, mac string, wait time.Duration) (string, error) {
	secs := int((wait + time.Second - 1) / time.Second)
	secs = max(secs, 1)
	chain := configChain(configURL)
	var b ipxe.Builder
	b.Comment("bootchain: machine " + mac + ": its site is at its cap of boots in flight; asking again in " + strconv.Itoa(secs) + " s")
	b.Line("echo", ipxe.Raw("bootchain: waiting for a boot slot, asking again in "+strconv.Itoa(secs)+" seconds"))
	b.Line("sleep", ipxe.Raw(strconv.Itoa(secs)))
	b.Line("chain", ipxe.Raw("--autofree"), chain, ipxe.Raw("|| goto giveup"))
	b.Line("exit")
	b.Label("giveup")
	b.Line("echo", ipxe.Raw("bootchain: bootapi unreachable, booting the next device"))
	b.Line("exit")
	return b.Script()
}
