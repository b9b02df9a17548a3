package manifest

import (
	"math/bits"
	"time"
)

// Timeline is the SegmentTimeline of a DASH SegmentTemplate, for the
// segments whose lengths differ (audio at 48 kHz in AAC frames, as Shaka
// Packager writes it): given the $Number$ or $Time$ a request's URL was
// made from, it says how much media that segment holds.
type Timeline struct {
	timescale   uint64
	startNumber uint64
	runs        []timelineRun
}

// timelineRun is one S element: n segments of d timescale units from
// start; n is 0 for r="-1", which repeats until the Period ends.
type timelineRun struct{ start, d, n uint64 }

// ByNumber is the duration of the segment numbered n ($Number$, counted
// from the template's startNumber), or 0 if the timeline does not hold it.
func (tl *Timeline) ByNumber(n uint64) time.Duration {
	if tl == nil || n < tl.startNumber {
		return 0
	}
	i := n - tl.startNumber
	for _, r := range tl.runs {
		if r.n == 0 || i < r.n {
			return ticks(r.d, tl.timescale)
		}
		i -= r.n
	}
	return 0
}

// Average is the mean duration of the timeline's segments (of its last
// run alone when that repeats to the Period's end), or 0.
func (tl *Timeline) Average() time.Duration {
	if tl == nil {
		return 0
	}
	var total, n uint64
	for _, r := range tl.runs {
		if r.n == 0 {
			return ticks(r.d, tl.timescale)
		}
		hi, lo := bits.Mul64(r.d, r.n)
		if hi != 0 || total+lo < total {
			return ticks(r.d, tl.timescale)
		}
		total, n = total+lo, n+r.n
	}
	if n == 0 {
		return 0
	}
	return ticks(total, tl.timescale) / time.Duration(n)
}

// ByTime is the duration of the segment that starts at t ($Time$, in the
// timescale), or 0 if no segment of the timeline starts there.
func (tl *Timeline) ByTime(t uint64) time.Duration {
	if tl == nil {
		return 0
	}
	for _, r := range tl.runs {
		if t < r.start || r.d == 0 {
			continue
		}
		k := (t - r.start) / r.d
		if (t-r.start)%r.d == 0 && (r.n == 0 || k < r.n) {
			return ticks(r.d, tl.timescale)
		}
	}
	return 0
}

// newTimeline places each S on the time axis: an S without @t starts
// where the one before it ended.
func newTimeline(runs []dashRun, timescale, startNumber uint64) *Timeline {
	tl := &Timeline{timescale: timescale, startNumber: startNumber, runs: make([]timelineRun, 0, len(runs))}
	var next uint64
	for _, r := range runs {
		if r.hasT {
			next = r.t
		}
		tl.runs = append(tl.runs, timelineRun{start: next, d: r.d, n: r.n})
		hi, span := bits.Mul64(r.d, r.n)
		if sum, carry := bits.Add64(next, span, 0); hi == 0 && carry == 0 {
			next = sum
		} else {
			next = ^uint64(0) // past any time a segment can start
		}
	}
	return tl
}
