package diagnose

import (
	"encoding/binary"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// Boot file architectures, as FileArch names them.
const (
	ArchBIOS     = "bios"
	ArchEFIIA32  = "efi-ia32"
	ArchEFIX64   = "efi-x86_64"
	ArchEFIARM   = "efi-arm"
	ArchEFIARM64 = "efi-arm64"
	ArchEFIRISCV = "efi-riscv64"
	archEFIOther = "efi-other"
)

// clientArches maps DHCP option 93 (RFC 4578, IANA processor architecture
// types) to the boot file architecture the client runs.
var clientArches = map[int]string{
	0: ArchBIOS, 6: ArchEFIIA32, 7: ArchEFIX64, 9: ArchEFIX64, 10: ArchEFIARM, 11: ArchEFIARM64, 27: ArchEFIRISCV,
}

// FileArchBytes is how much of a file's start FileArch needs.
const FileArchBytes = 4096

// FileArch says what a boot file is built for from its first bytes: a PE/COFF
// image (an EFI binary) by its machine type, anything else a BIOS network boot
// program (PXE NBPs such as undionly.kpxe have no header). "" when head is too
// short to tell.
func FileArch(head []byte) string {
	if len(head) < 2 {
		return ""
	}
	if head[0] != 'M' || head[1] != 'Z' {
		return ArchBIOS
	}
	if len(head) < 0x40 {
		return ""
	}
	off := int(binary.LittleEndian.Uint32(head[0x3c:]))
	if off < 0 || off > len(head)-6 {
		return ""
	}
	if string(head[off:off+4]) != "PE\x00\x00" {
		return ArchBIOS // an MZ stub without a PE header is no EFI image
	}
	switch binary.LittleEndian.Uint16(head[off+4:]) {
	case 0x14c:
		return ArchEFIIA32
	case 0x8664:
		return ArchEFIX64
	case 0x1c2, 0x1c4:
		return ArchEFIARM
	case 0xaa64:
		return ArchEFIARM64
	case 0x5064:
		return ArchEFIRISCV
	}
	return archEFIOther
}

// ClassName is the short name of a class: "artifact_not_found" for
// DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND (metric labels, bootctl).
func ClassName(c bootapiv1.DiagnosisClass) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "DIAGNOSIS_CLASS_"))
}
