// Package request parses TFTP request packets (RFC 1350 RRQ/WRQ with RFC 2347
// options) and decides whether a requested file name is safe to look up.
//
// tftpd reads every packet that reaches its request port through this package before
// pin/tftp sees it, so that malformed packets are counted and dropped, bad paths get
// an "access violation" error packet, and options are clamped to what the server
// allows.
//
//	req, err := request.Parse(pkt)
//	name, err := request.CleanPath(req.Filename)
package request

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Opcode is a TFTP packet type.
type Opcode uint16

// Opcodes of RFC 1350 and RFC 2347.
const (
	OpRRQ   Opcode = 1
	OpWRQ   Opcode = 2
	OpDATA  Opcode = 3
	OpACK   Opcode = 4
	OpERROR Opcode = 5
	OpOACK  Opcode = 6
)

// Error codes of RFC 1350 (8 from RFC 2347).
const (
	ErrCodeNotDefined       uint16 = 0
	ErrCodeFileNotFound     uint16 = 1
	ErrCodeAccessViolation  uint16 = 2
	ErrCodeDiskFull         uint16 = 3
	ErrCodeIllegalOperation uint16 = 4
	ErrCodeUnknownTID       uint16 = 5
	ErrCodeFileExists       uint16 = 6
	ErrCodeNoSuchUser       uint16 = 7
	ErrCodeOptionRefused    uint16 = 8
)

// MaxRequestLen bounds a request packet: RFC 1350 requests fit one 512-byte block.
const MaxRequestLen = 512

// MaxPathLen bounds a requested file name.
const MaxPathLen = 255

// Errors; compare with errors.Is.
var (
	// ErrMalformed: the packet is not a well-formed request.
	ErrMalformed = errors.New("malformed request")
	// ErrAccess: the file name is not allowed (traversal, absolute, backslash, ...).
	ErrAccess = errors.New("access violation")
)

// Request is a parsed RRQ or WRQ.
type Request struct {
	Op       Opcode
	Filename string
	// Mode is lowercased: "octet", "netascii" or "mail".
	Mode string
	// Options with lowercased names, in the order they came (RFC 2347).
	Options []Option
}

// Option is one RFC 2347 option.
type Option struct {
	Name, Value string
}

// Option returns the value of option name and whether it was given.
func (r Request) Option(name string) (string, bool) {
	for _, o := range r.Options {
		if o.Name == name {
			return o.Value, true
		}
	}
	return "", false
}

// OpcodeOf returns the opcode of a packet, or 0 when it is shorter than two bytes.
func OpcodeOf(pkt []byte) Opcode {
	if len(pkt) < 2 {
		return 0
	}
	return Opcode(binary.BigEndian.Uint16(pkt))
}

// Parse parses an RRQ or WRQ packet.
func Parse(pkt []byte) (Request, error) {
	if len(pkt) < 2 {
		return Request{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(pkt))
	}
	if len(pkt) > MaxRequestLen {
		return Request{}, fmt.Errorf("%w: %d bytes is longer than %d", ErrMalformed, len(pkt), MaxRequestLen)
	}
	op := OpcodeOf(pkt)
	if op != OpRRQ && op != OpWRQ {
		return Request{}, fmt.Errorf("%w: opcode %d is not a request", ErrMalformed, op)
	}
	body := pkt[2:]
	if len(body) == 0 || body[len(body)-1] != 0 {
		return Request{}, fmt.Errorf("%w: not NUL-terminated", ErrMalformed)
	}
	fields := bytes.Split(body[:len(body)-1], []byte{0})
	if len(fields) < 2 {
		return Request{}, fmt.Errorf("%w: missing file name or mode", ErrMalformed)
	}
	if len(fields)%2 != 0 {
		return Request{}, fmt.Errorf("%w: option %q has no value", ErrMalformed, fields[len(fields)-1])
	}
	r := Request{Op: op, Filename: string(fields[0]), Mode: strings.ToLower(string(fields[1]))}
	if r.Filename == "" {
		return Request{}, fmt.Errorf("%w: empty file name", ErrMalformed)
	}
	switch r.Mode {
	case "octet", "netascii", "mail":
	default:
		return Request{}, fmt.Errorf("%w: unknown mode %q", ErrMalformed, fields[1])
	}
	seen := map[string]bool{}
	for i := 2; i+1 < len(fields); i += 2 {
		name := strings.ToLower(string(fields[i]))
		if name == "" {
			return Request{}, fmt.Errorf("%w: empty option name", ErrMalformed)
		}
		if seen[name] {
			return Request{}, fmt.Errorf("%w: option %q given twice", ErrMalformed, name)
		}
		seen[name] = true
		r.Options = append(r.Options, Option{Name: name, Value: string(fields[i+1])})
	}
	return r, nil
}

// Encode returns the request as a packet.
func (r Request) Encode() []byte {
	n := 2 + len(r.Filename) + 1 + len(r.Mode) + 1
	for _, o := range r.Options {
		n += len(o.Name) + len(o.Value) + 2
	}
	b := make([]byte, 2, n)
	binary.BigEndian.PutUint16(b, uint16(r.Op))
	b = append(append(b, r.Filename...), 0)
	b = append(append(b, r.Mode...), 0)
	for _, o := range r.Options {
		b = append(append(b, o.Name...), 0)
		b = append(append(b, o.Value...), 0)
	}
	return b
}

// Limits are what the server accepts of the client's options.
type Limits struct {
	// MaxBlksize caps blksize (RFC 2348); at least 512.
	MaxBlksize int
}

// Negotiated is the outcome of Clamp: what the client asked and what the server
// will offer.
type Negotiated struct {
	// Blksize requested by the client (0: none or invalid) and offered.
	BlksizeAsked, Blksize int
	// Tsize: the client asked for the transfer size (RFC 2349).
	Tsize bool
	// Windowsize requested (RFC 7440), 0 when absent; never offered (see docs).
	WindowsizeAsked int
	// Timeout requested in seconds (RFC 2349), 0 when absent.
	TimeoutAsked int
	// OACK: some option is acknowledged, so the transfer starts with an OACK.
	OACK bool
}

// Clamp rewrites the request's options to what the server offers: blksize capped
// to lim.MaxBlksize (or removed when invalid), tsize kept, everything else removed
// (pin/tftp acknowledges only blksize and tsize). Unknown options are ignored, as
// RFC 2347 asks.
func (r *Request) Clamp(lim Limits) Negotiated {
	var n Negotiated
	var kept []Option
	for _, o := range r.Options {
		switch o.Name {
		case "blksize":
			v, err := strconv.Atoi(o.Value)
			if err != nil || v < 8 || v > 65464 {
				continue
			}
			n.BlksizeAsked = v
			if v > lim.MaxBlksize {
				v = lim.MaxBlksize
			}
			if v < 512 {
				// pin/tftp serves 512 at least; drop the option so the client is
				// not told a size it did not get.
				continue
			}
			n.Blksize = v
			kept = append(kept, Option{Name: "blksize", Value: strconv.Itoa(v)})
		case "tsize":
			n.Tsize = true
			kept = append(kept, Option{Name: "tsize", Value: "0"})
		case "windowsize":
			n.WindowsizeAsked, _ = strconv.Atoi(o.Value)
		case "timeout":
			n.TimeoutAsked, _ = strconv.Atoi(o.Value)
		}
	}
	r.Options = kept
	n.OACK = len(kept) > 0
	if n.Blksize == 0 {
		n.Blksize = 512
	}
	return n
}

// OptionString formats options as "name=value ..." sorted, for logs.
func OptionString(opts []Option) string {
	parts := make([]string, 0, len(opts))
	for _, o := range opts {
		parts = append(parts, o.Name+"="+o.Value)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// CleanPath checks a requested file name and returns it as the key to look up. One
// leading '/' names the TFTP root, as tftpd-hpa and dnsmasq read it (GRUB asks for
// "/grub/grub.cfg": its prefix is an absolute path on the server) and is dropped.
// It refuses (ErrAccess) "..", "." and empty components (so "//x"), backslashes,
// NUL and other control characters, invalid UTF-8 and names longer than MaxPathLen;
// firmware asks for plain relative names ("ipxe.efi", "pxelinux.cfg/01-...").
func CleanPath(name string) (string, error) {
	name = strings.TrimPrefix(name, "/")
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty name", ErrAccess)
	case len(name) > MaxPathLen:
		return "", fmt.Errorf("%w: name longer than %d bytes", ErrAccess, MaxPathLen)
	case !utf8.ValidString(name):
		return "", fmt.Errorf("%w: name is not UTF-8", ErrAccess)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w: empty path component in %q", ErrAccess, "/"+name)
	case strings.ContainsRune(name, '\\'):
		return "", fmt.Errorf("%w: backslash in %q", ErrAccess, name)
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control character %#x in name", ErrAccess, c)
		}
	}
	for _, part := range strings.Split(name, "/") {
		switch part {
		case "":
			return "", fmt.Errorf("%w: empty path component in %q", ErrAccess, name)
		case ".", "..":
			return "", fmt.Errorf("%w: %q component in %q", ErrAccess, part, name)
		}
	}
	return name, nil
}

// ErrorPacket returns a TFTP ERROR packet.
func ErrorPacket(code uint16, msg string) []byte {
	if len(msg) > 200 {
		msg = msg[:200]
	}
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, uint16(OpERROR))
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(append(b, msg...), 0)
	return b
}

// ParseError parses an ERROR packet into its code and message.
func ParseError(pkt []byte) (uint16, string, error) {
	if len(pkt) < 5 || OpcodeOf(pkt) != OpERROR {
		return 0, "", fmt.Errorf("%w: not an error packet", ErrMalformed)
	}
	msg := pkt[4:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	return binary.BigEndian.Uint16(pkt[2:]), string(msg), nil
}
