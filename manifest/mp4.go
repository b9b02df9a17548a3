package manifest

import (
	"encoding/binary"
	"time"
)

// A progressive MP4 says how long it plays in its movie header (moov/mvhd),
// at its start ("fast start") or at its end, where a player reads it with
// a range request of its own. MP4Duration finds it in the bytes of a
// response as they pass, walking the top-level boxes and skipping their
// payloads. Of the moov it holds only the start, where the movie header
// is (muxers write it first): a few KiB per response, however large the
// file or its moov.

// maxMoov is how much of a moov box MP4Duration reads to find its movie
// header.
const maxMoov = 4 << 10

// MP4Duration reads the duration of an MP4 file from a run of its bytes
// that starts at a top-level box: the whole file, or a range starting at
// its moov. Write the bytes as they come; Duration says what was found.
type MP4Duration struct {
	need     int    // bytes of the current box header still to read, or of the moov
	header   []byte // the box header read so far
	skip     int64  // payload bytes of the current box still to skip
	moov     []byte // the moov read so far, when in one
	inMoov   bool
	done     bool
	duration time.Duration
}

// Write takes the next bytes of the file. It never fails: bytes that are
// not MP4 boxes end the search.
func (m *MP4Duration) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 && !m.done {
		switch {
		case m.skip > 0:
			k := int(min(m.skip, int64(len(b))))
			m.skip -= int64(k)
			b = b[k:]
		case m.inMoov:
			k := min(m.need, len(b))
			m.moov = append(m.moov, b[:k]...)
			m.need -= k
			b = b[k:]
			if m.need == 0 {
				m.duration, m.done = mvhdDuration(m.moov), true
			}
		default:
			if m.need == 0 {
				m.need = 8
			}
			k := min(m.need, len(b))
			m.header = append(m.header, b[:k]...)
			m.need -= k
			b = b[k:]
			if m.need == 0 && !m.box() {
				m.done = true
			}
		}
	}
	return n, nil
}

// box reads the box header just completed and sets up its payload,
// reporting whether it looks like a box at all.
func (m *MP4Duration) box() bool {
	h := m.header
	if len(h) == 8 && binary.BigEndian.Uint32(h) == 1 {
		m.need = 8 // a 64-bit size follows
		return true
	}
	size := int64(binary.BigEndian.Uint32(h))
	if len(h) == 16 {
		size = int64(binary.BigEndian.Uint64(h[8:]))
	}
	for _, c := range h[4:8] {
		if c < ' ' || c > '~' {
			return false
		}
	}
	payload := size - int64(len(h))
	typ := string(h[4:8])
	m.header = m.header[:0]
	if size == 0 || payload < 0 {
		return false // to the end of the file, or no size: nothing after it to read
	}
	if typ == "moov" {
		m.inMoov, m.need = true, int(min(payload, maxMoov))
		return true
	}
	m.skip = payload
	return true
}

// Duration is the file's duration, when its movie header was read.
func (m *MP4Duration) Duration() (time.Duration, bool) {
	return m.duration, m.duration > 0
}

// mvhdDuration reads the duration of the mvhd box in (the start of) a
// moov's payload.
func mvhdDuration(moov []byte) time.Duration {
	for len(moov) >= 8 {
		size := int(binary.BigEndian.Uint32(moov))
		if size < 8 || (size > len(moov) && string(moov[4:8]) != "mvhd") {
			return 0
		}
		size = min(size, len(moov))
		if string(moov[4:8]) == "mvhd" {
			b := moov[8:size]
			var timescale, duration uint64
			switch {
			case len(b) >= 20 && b[0] == 0:
				timescale, duration = uint64(binary.BigEndian.Uint32(b[12:])), uint64(binary.BigEndian.Uint32(b[16:]))
			case len(b) >= 32 && b[0] == 1:
				timescale, duration = uint64(binary.BigEndian.Uint32(b[20:])), binary.BigEndian.Uint64(b[24:])
			}
			if timescale == 0 || duration == 0 || duration == 1<<32-1 || duration == 1<<64-1 {
				return 0 // unknown (fragmented files say so)
			}
			return ticks(duration, timescale)
		}
		moov = moov[size:]
	}
	return 0
}
