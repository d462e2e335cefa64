//go:build linux && !amd64 && !arm64

package lab

// sysSetns < 0: entering a namespace from Go is not implemented on this architecture.
const sysSetns = -1
