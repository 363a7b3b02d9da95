//go:build !race

package wire

import (
	"bytes"
	"testing"
)

// Heartbeats and ACKs, the frames of a quiet stream, cost no allocation
// once the reader has seen one.
func TestReaderSmallFramesAllocateNothing(t *testing.T) {
	frames := AppendFrame(nil, TypeHeartbeat, AppendHeartbeat(nil, Heartbeat{LatestVersion: 1}))
	frames = AppendFrame(frames, TypeAck, AppendAck(nil, Ack{Version: 1}))
	stream := bytes.Repeat(frames, 64)
	br := bytes.NewReader(stream)
	r := NewReader(br, 0)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, _, err := r.Next(); err != nil {
			br.Reset(stream)
		}
	})
	if allocs != 0 {
		t.Fatalf("Next allocates %.1f times per small frame, want 0", allocs)
	}
}
