package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"testing/iotest"
	"time"
)

// A peer that declares a huge frame and then stalls costs the reader only
// about what it sent, not the declared length: before, a 12-byte header made
// the reader allocate the whole limit (64 MiB) at once.
func TestReaderMemoryFollowsBytesReceived(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, sent := range []int{0, 1000, 1 << 20} {
		peerDone := make(chan struct{})
		release := make(chan struct{})
		// Built here, so that the peer allocates nothing while the reader's
		// allocations are counted (the count is the whole process's).
		msg := make([]byte, HeaderSize+sent)
		putHeader(msg, ProtocolVersion, TypeFull, DefaultMaxPayload, nil)
		go func() {
			defer close(peerDone)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if _, err := c.Write(msg); err != nil {
				t.Error(err)
				return
			}
			<-release // stall: the rest of the frame never comes
		}()
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		// The deadline only ends the stall; it bounds no speed. Had the
		// bytes not all arrived by then, the reader would hold less.
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		r := NewReader(conn, DefaultMaxPayload)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err = r.Next()
		runtime.ReadMemStats(&after)
		close(release)
		<-peerDone
		conn.Close()

		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("sent %d bytes of a %d-byte frame: got %v, want a read timeout", sent, DefaultMaxPayload, err)
		}
		held := max(firstGrowth, 2*sent)
		if cap(r.buf) > held {
			t.Errorf("sent %d bytes of a %d-byte frame: reader holds a %d-byte buffer, want at most %d", sent, DefaultMaxPayload, cap(r.buf), held)
		}
		// The buffers grown on the way sum to less than twice the last.
		if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(2*held+1<<20); got > limit {
			t.Errorf("sent %d bytes of a %d-byte frame: reading allocated %d bytes, want at most %d", sent, DefaultMaxPayload, got, limit)
		}
	}
}

// A payload larger than firstGrowth arriving in small reads is read whole,
// into a buffer that ends at its exact size and is reused by the next frame.
func TestReaderGrowsToPayloadAndReuses(t *testing.T) {
	big := make([]byte, 3*firstGrowth+123)
	for i := range big {
		big[i] = byte(i * 7)
	}
	hb := AppendHeartbeat(nil, Heartbeat{LatestVersion: 1})
	var stream []byte
	for _, p := range [][]byte{hb, big, hb, big} {
		stream = AppendFrame(stream, TypeFull, p)
	}
	r := NewReader(iotest.HalfReader(bytes.NewReader(stream)), len(big))
	var first *byte
	for i, want := range [][]byte{hb, big, hb, big} {
		_, p, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(p, want) {
			t.Fatalf("frame %d: payload differs", i)
		}
		if i == 1 {
			first = &p[0]
			if cap(r.buf) != len(big) {
				t.Fatalf("buffer grew to %d bytes for a %d-byte payload", cap(r.buf), len(big))
			}
		}
		if i == 3 && &p[0] != first {
			t.Fatal("second large frame reallocated the buffer")
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: got %v, want io.EOF", err)
	}
}
