package manifest

import (
	"os"
	"testing"
	"time"
)

// A segment's duration by its $Number$ or $Time$, on the Shaka fixture's
// audio (48 kHz, lengths that differ) and the live fixture (r="-1").
func TestTimeline(t *testing.T) {
	timeline := func(fixture string, nth int) *Timeline {
		body, err := os.ReadFile("testdata/" + fixture)
		if err != nil {
			t.Fatal(err)
		}
		refs, err := Refs(DASH, body)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range refs {
			if r.Timeline != nil {
				if nth == 0 {
					return r.Timeline
				}
				nth--
			}
		}
		t.Fatalf("%s: no timeline %d", fixture, nth)
		return nil
	}
	audio := timeline("shaka_timeline.mpd", 1)
	video := timeline("shaka_timeline.mpd", 0)
	live := timeline("live_location.mpd", 0)
	for _, c := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"audio number 1", audio.ByNumber(1), 192512 * time.Second / 48000},
		{"audio number 2", audio.ByNumber(2), 191488 * time.Second / 48000},
		{"audio number 3", audio.ByNumber(3), 192512 * time.Second / 48000},
		{"audio number 0 (before startNumber)", audio.ByNumber(0), 0},
		{"audio number 4 (past the end)", audio.ByNumber(4), 0},
		{"audio time 192512", audio.ByTime(192512), 191488 * time.Second / 48000},
		{"audio time 384000", audio.ByTime(384000), 192512 * time.Second / 48000},
		{"audio time 100 (no segment starts there)", audio.ByTime(100), 0},
		{"video number 3 (r=1 then one more)", video.ByNumber(3), 4004 * time.Millisecond},
		{"video time 360360 (past the end)", video.ByTime(360360), 0},
		{"live time far ahead (r=-1)", live.ByTime(323999820000 + 1000*180000), 2 * time.Second},
		{"live time off the grid", live.ByTime(323999820000 + 90000), 0},
		{"live time before the first", live.ByTime(0), 0},
		{"nil timeline", (*Timeline)(nil).ByNumber(1), 0},
		{"audio average", audio.Average(), (192512 + 191488 + 192512) * time.Second / 3 / 48000},
		{"video average", video.Average(), 4004 * time.Millisecond},
		{"live average (r=-1)", live.Average(), 2 * time.Second},
		{"nil average", (*Timeline)(nil).Average(), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
}
