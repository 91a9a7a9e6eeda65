// Package vhdx writes and reads VHDX virtual disks (MS-VHDX version 1).
//
// The writer produces a dynamic disk from a sequential stream of the raw
// disk content: payload blocks that are entirely zero are not stored, every
// byte of the output is written (no sparse holes, which Windows refuses),
// and all IDs are derived from the SHA-256 of the raw content, so the same
// input always gives the same bytes. The reader opens dynamic and fixed
// (non-differencing) VHDX files and exposes the virtual disk as an
// io.ReaderAt.
package vhdx

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"strings"
)

const (
	mib = 1 << 20

	fileSignature   = "vhdxfile"
	headerSignature = "head"
	regionSignature = "regi"
	metaSignature   = "metadata"

	header1Offset = 0x10000
	header2Offset = 0x20000
	region1Offset = 0x30000
	region2Offset = 0x40000
	headerSize    = 4096
	regionSize    = 64 * 1024

	logOffset  = 1 * mib
	logLength  = 1 * mib
	metaOffset = 2 * mib
	metaLength = 1 * mib
	batOffset  = 3 * mib

	// Payload block states.
	stateNotPresent       = 0
	stateUndefined        = 1
	stateZero             = 2
	stateUnmapped         = 3
	stateUnmappedV095     = 5
	stateFullyPresent     = 6
	statePartiallyPresent = 7

	// MaxSize is the largest virtual disk size the format allows (64 TiB).
	MaxSize = 64 << 40
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// GUIDs of regions and metadata items, in their textual form.
var (
	guidBATRegion      = mustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	guidMetadataRegion = mustGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
	guidFileParams     = mustGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	guidVirtualSize    = mustGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	guidPage83         = mustGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	guidLogicalSector  = mustGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	guidPhysicalSector = mustGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
	guidParentLocator  = mustGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
)

// GUID is a GUID in its on-disk (Microsoft mixed-endian) byte order.
type GUID [16]byte

// mustGUID parses "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" into on-disk order.
func mustGUID(s string) GUID {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("vhdx: bad GUID literal " + s)
	}
	return FromRFC4122([16]byte(b))
}

// FromRFC4122 converts a UUID in RFC 4122 (big-endian) byte order, as used
// by github.com/google/uuid, to the on-disk mixed-endian order.
func FromRFC4122(u [16]byte) GUID {
	var g GUID
	copy(g[:], u[:])
	g[0], g[1], g[2], g[3] = u[3], u[2], u[1], u[0]
	g[4], g[5] = u[5], u[4]
	g[6], g[7] = u[7], u[6]
	return g
}

// String formats g in the usual textual form.
func (g GUID) String() string {
	u := FromRFC4122(g) // the swap is its own inverse
	h := hex.EncodeToString(u[:])
	return strings.ToUpper(h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:])
}

func checksum(b []byte, field int) uint32 {
	var saved [4]byte
	copy(saved[:], b[field:field+4])
	clear(b[field : field+4])
	c := crc32.Checksum(b, castagnoli)
	copy(b[field:field+4], saved[:])
	return c
}

// chunkRatio is the number of payload blocks per sector-bitmap block.
func chunkRatio(blockSize, logicalSector uint32) uint64 {
	return (uint64(1) << 23) * uint64(logicalSector) / uint64(blockSize)
}

// batIndex returns the BAT entry index of payload block i.
func batIndex(i, ratio uint64) uint64 { return i + i/ratio }

// batEntries returns the number of BAT entries of a dynamic disk.
func batEntries(dataBlocks, ratio uint64) uint64 {
	if dataBlocks == 0 {
		return 0
	}
	return dataBlocks + (dataBlocks-1)/ratio
}

var le = binary.LittleEndian
