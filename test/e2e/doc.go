// Package e2e holds the infrastructure for bootchain's whole-chain tests and boot
// benchmarks: real firmware, real iPXE and a real Linux kernel in QEMU, on a private
// network built with package lab.
//
//   - BuildInitrd packs a small busybox initramfs whose /init gets a DHCP lease and
//     reports "running" then "succeeded" to the bootchain.callback= URL of the
//     kernel cmdline (with bootchain.token= and the bootchain.traceparent= header),
//     then powers off. Built initrds are cached by content.
//   - StartVM runs QEMU (TCG, SeaBIOS+iPXE ROM or OVMF, tap NIC in a lab namespace)
//     and VM.Wait / VM.WaitSerial wait for it with deadlines.
//   - ServeCallbacks stands in for bootapi's callback endpoint.
//   - StartDnsmasq and StartNginx run the peers bootchain is compared with.
//
// A boot in a few lines (error handling left out):
//
//	l := lab.NewT(t, lab.Config{})
//	tap, _ := l.AddTap(ctx, "tap0")
//	rd, _ := e2e.BuildInitrd(ctx, e2e.InitrdConfig{})
//	ln, _ := l.Main().Listen("tcp", "198.18.0.1:8080")
//	cb := e2e.ServeCallbacks(ln)
//	// ... a DHCP server in l.Main() ...
//	vm, _ := e2e.StartVM(l, l.Main(), e2e.VMConfig{MAC: mac, Tap: tap,
//		Kernel: rd.Kernel.Image, Initrd: rd.Path,
//		Append: "console=ttyS0 bootchain.callback=" + cb.URL("job1")})
//	rep, _ := cb.WaitState(ctx, "succeeded")
//
// Everything needs root and the Debian packages of scripts/install-deps.sh; tests
// skip (with the reason) where those are missing.
package e2e
