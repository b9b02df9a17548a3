package manifest

import (
	"encoding/binary"
	"os"
	"testing"
	"time"
)

// TestMP4Duration reads the demo MP4's duration (12 s, its moov after its
// mdat, as ffmpeg writes by default) from the whole file in small writes,
// and from a range that starts at its moov, as a player asks for it.
func TestMP4Duration(t *testing.T) {
	file, err := os.ReadFile("../demo/media/mp4/video.mp4")
	if err != nil {
		t.Fatal(err)
	}
	var whole MP4Duration
	for b := file; len(b) > 0; {
		k := min(len(b), 1000)
		whole.Write(b[:k])
		b = b[k:]
	}
	if d, ok := whole.Duration(); !ok || d < 11900*time.Millisecond || d > 12100*time.Millisecond {
		t.Fatalf("whole file: %v %v, want about 12s", d, ok)
	}
	// Where the moov starts: walk the top-level boxes.
	at := 0
	for at+8 <= len(file) && string(file[at+4:at+8]) != "moov" {
		at += int(binary.BigEndian.Uint32(file[at:]))
	}
	var tail MP4Duration
	tail.Write(file[at:])
	if d, ok := tail.Duration(); !ok || d < 11900*time.Millisecond {
		t.Fatalf("from the moov: %v %v", d, ok)
	}
	// Bytes that are no box, or a range from inside the mdat: nothing.
	var mid MP4Duration
	mid.Write(file[len(file)/3:])
	if d, ok := mid.Duration(); ok {
		t.Fatalf("a range inside the mdat gave %v", d)
	}
}

// FuzzMP4Duration: whatever the bytes, reading them never panics and
// never holds more than one bounded moov.
func FuzzMP4Duration(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x10moov\x00\x00\x00\x08mvhd"))
	f.Add([]byte("\x00\x00\x00\x01mdat\x00\x00\x00\x00\x00\x00\x00\x10"))
	f.Add([]byte("\x00\x00\x00\x00free"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m MP4Duration
		m.Write(b)
		if len(m.moov) > maxMoov {
			t.Fatalf("held %d bytes of moov", len(m.moov))
		}
		m.Duration()
	})
}
