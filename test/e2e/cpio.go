package e2e

import (
	"fmt"
	"io"
)

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format that the Linux kernel
// unpacks as an initramfs. Every field that could vary between builds (mtime, uid,
// gid, inode numbers) is fixed, so equal inputs give byte-identical archives.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	err  error
	seen map[string]bool
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, seen: map[string]bool{}}
}

// File modes for cpio headers (from <sys/stat.h>).
const (
	cpioModeDir     = 0o040000
	cpioModeRegular = 0o100000
	cpioModeSymlink = 0o120000
	cpioModeChar    = 0o020000
)

func (c *cpioWriter) header(name string, mode uint32, size int, devMajor, devMinor uint32) {
	if c.err != nil {
		return
	}
	if c.seen[name] {
		c.err = fmt.Errorf("cpio: duplicate entry %q", name)
		return
	}
	c.seen[name] = true
	nlink := uint32(1)
	if mode&0o170000 == cpioModeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, devMajor, devMinor, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) {
	c.header(name, cpioModeDir|perm, 0, 0, 0)
}

// File adds a regular file.
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.header(name, cpioModeRegular|perm, len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

// Symlink adds a symbolic link.
func (c *cpioWriter) Symlink(name, target string) {
	c.header(name, cpioModeSymlink|0o777, len(target), 0, 0)
	c.write([]byte(target))
	c.pad(len(target))
}

// CharDev adds a character device node (no mknod privileges needed).
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.header(name, cpioModeChar|perm, 0, major, minor)
}

// Close writes the trailer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
