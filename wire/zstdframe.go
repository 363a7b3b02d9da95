package wire

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// oneFrame checks that p, whose header zh describes, is exactly one zstd
// frame (RFC 8878 §3.1.1) and nothing after it. The decoder's DecodeAll
// takes any number of concatenated frames and skips skippable ones, so a
// FULL or DELTA carrying bytes after its frame was accepted.
func oneFrame(p []byte, zh *zstd.Header) error {
	if zh.Skippable {
		return errors.New("a skippable zstd frame")
	}
	// Each block has a 3-byte little-endian header: bit 0 last block,
	// bits 1–2 type, bits 3–23 size.
	off := zh.HeaderSize
	for {
		if len(p)-off < 3 {
			return errors.New("zstd frame cut inside a block header")
		}
		bh := uint32(p[off]) | uint32(p[off+1])<<8 | uint32(p[off+2])<<16
		off += 3
		size := int(bh >> 3)
		if (bh>>1)&3 == 1 { // RLE: one byte repeated size times
			size = 1
		}
		if len(p)-off < size {
			return errors.New("zstd frame cut inside a block")
		}
		off += size
		if bh&1 != 0 {
			break
		}
	}
	if zh.HasCheckSum {
		off += 4
	}
	if off > len(p) {
		return errors.New("zstd frame cut inside its checksum")
	}
	if off != len(p) {
		return fmt.Errorf("%d bytes after the zstd frame", len(p)-off)
	}
	return nil
}
