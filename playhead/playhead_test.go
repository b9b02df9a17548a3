package playhead

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// strict is the handler's default: four turns within two minutes.
var strict = Rules{Turns: 4, Within: 2 * time.Minute}

func TestPositionOf(t *testing.T) {
	pos := func(n ...uint64) Position {
		var p Position
		for _, v := range n {
			p.push(v)
		}
		return p
	}
	for _, c := range []struct {
		name string
		from int64
		want Position
		ok   bool
	}{
		{"seg_00042.ts", -1, pos(42), true},                   // ffmpeg HLS
		{"data042.ts", -1, pos(42), true},                     // ffmpeg -var_stream_map
		{"chunk-stream0-00042.m4s", -1, pos(42), true},        // ffmpeg DASH: rendition, then number
		{"chunk-stream1-00042.m4s", -1, pos(42), true},        // the next rendition agrees
		{"file_1080p_00042.ts", -1, pos(42), true},            // MediaConvert's name modifiers
		{"segment-42.m4s", -1, pos(42), true},                 // Bento4
		{"fileSequence271.mp4", -1, pos(271), true},           // Apple
		{"filePart271.3.mp4", -1, pos(271, 3), true},          // Apple LL-HLS part
		{"seg271_part3.m4s", -1, pos(271, 3), true},           // a part, spelled out
		{"t120000.m4s", -1, pos(120000), true},                // $Time$
		{"main.mp4", 1_048_576, pos(1_048_576), true},         // EXT-X-BYTERANGE
		{"seg_7.ts", 188, pos(7, 188), true},                  // a range of a numbered file
		{"main.mp4", -1, Position{}, false},                   // nothing tells
		{"99999999999999999999999.ts", -1, Position{}, false}, // overflows
		{"42", -1, pos(42), true},                             // no extension
	} {
		got, ok := Of(c.name, c.from)
		if ok != c.ok || got.Compare(c.want) != 0 {
			t.Errorf("Of(%q, %d) = %v %v, want %v %v", c.name, c.from, got, ok, c.want, c.ok)
		}
	}
	if pos(271).Compare(pos(271, 0)) >= 0 || pos(271, 3).Compare(pos(272)) >= 0 || pos(3).Compare(pos(3)) != 0 {
		t.Error("positions do not order as a segment, its parts, the next segment")
	}
}

// player is one simulated player: the positions it fetches, in order,
// with the time of each.
type fetch struct {
	at  time.Duration
	pos Position
}

// replay feeds the fetches of several players, merged by time, to one
// tracker, and returns the most playheads it saw playing at once and the
// screen each fetch was given.
func replay(t *testing.T, r Rules, players ...[]fetch) (most int, screens [][]int) {
	t.Helper()
	type tagged struct {
		fetch
		player, i int
	}
	var all []tagged
	screens = make([][]int, len(players))
	for p, fs := range players {
		screens[p] = make([]int, len(fs))
		for i, f := range fs {
			all = append(all, tagged{f, p, i})
		}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].at < all[b].at })
	var tr Tracker
	start := time.Unix(1_800_000_000, 0)
	most = 1
	for _, f := range all {
		got := tr.Fetched(f.pos, 0, start.Add(f.at), r)
		most = max(most, got.Playing)
		screens[f.player][f.i] = got.Screen
		if tr.Heads() > MaxHeads {
			t.Fatalf("%d playheads followed", tr.Heads())
		}
	}
	return most, screens
}

// steady is a player at steady state: it fetches segment first, then one
// segment every seg, n of them, from time begin; burst segments first at
// once (a player filling its buffer).
func steady(name func(i int) string, first, n, burst int, begin, seg time.Duration) []fetch {
	var out []fetch
	at := begin
	for i := range n {
		p, _ := Of(name(first+i), -1)
		out = append(out, fetch{at, p})
		if i >= burst {
			at += seg
		} else {
			at += 50 * time.Millisecond
		}
	}
	return out
}

func hlsName(i int) string { return fmt.Sprintf("seg_%05d.ts", i) }

func TestOnePlayerIsOnePlayhead(t *testing.T) {
	const seg = 2 * time.Second
	abr := func(i int) string { return fmt.Sprintf("chunk-stream%d-%05d.m4s", (i/7)%4, i) }
	flip := func(i int) string { return fmt.Sprintf("chunk-stream%d-%05d.m4s", i%2, i) }
	for name, fetches := range map[string][]fetch{
		"linear, buffering 600 s first": steady(hlsName, 0, 600, 300, 0, seg),
		"ABR switches every 7 segments": steady(abr, 0, 300, 15, 0, seg),
		"ABR flapping every segment":    steady(flip, 0, 300, 15, 0, seg),
		"seeks": func() []fetch {
			var out []fetch
			at := time.Duration(0)
			for _, from := range []int{0, 200, 50, 400, 10, 300, 60, 0, 500, 40} {
				s := steady(hlsName, from, 12, 5, at, seg)
				out = append(out, s...)
				at = s[len(s)-1].at + 3*time.Second
			}
			return out
		}(),
		"scrubbing back and forth": func() []fetch {
			var out []fetch
			at := time.Duration(0)
			for k := range 30 {
				from := 100 + 37*(k%5) - 20*(k%3)
				s := steady(hlsName, from, 3, 3, at, seg)
				out = append(out, s...)
				at = s[len(s)-1].at + time.Second
			}
			return out
		}(),
		"retries, one segment in three": func() []fetch {
			s := steady(hlsName, 0, 300, 10, 0, seg)
			var out []fetch
			for i, f := range s {
				out = append(out, f)
				if i%3 == 0 {
					out = append(out, fetch{f.at + 500*time.Millisecond, f.pos})
				}
			}
			return out
		}(),
		"Wi-Fi to mobile: an abort, then the segment again on another address": func() []fetch {
			s := steady(hlsName, 0, 120, 10, 0, seg)
			return append(s[:60:60], append([]fetch{{s[59].at + time.Second, s[59].pos}}, s[60:]...)...)
		}(),
		"LL-HLS parts, then whole segments when behind": func() []fetch {
			var out []fetch
			at := time.Duration(0)
			for s := 100; s < 140; s++ {
				for part := range 4 {
					p, _ := Of(fmt.Sprintf("filePart%d.%d.mp4", s, part), -1)
					out = append(out, fetch{at, p})
					at += 500 * time.Millisecond
				}
			}
			for s := 140; s < 150; s++ {
				p, _ := Of(fmt.Sprintf("fileSequence%d.mp4", s), -1)
				out = append(out, fetch{at, p})
				at += 2 * time.Second
			}
			return out
		}(),
		"one file, byte ranges": func() []fetch {
			var out []fetch
			for i := range 200 {
				p, _ := Of("main.mp4", int64(i)*500_000)
				out = append(out, fetch{time.Duration(i) * seg, p})
			}
			return out
		}(),
		"prefetch: the next segment asked before the last one ends": func() []fetch {
			s := steady(hlsName, 0, 200, 0, 0, seg)
			for i := range s {
				if i%2 == 1 {
					s[i].at = s[i-1].at + 10*time.Millisecond
				}
			}
			return s
		}(),
		"a reload: the page plays again from the start": func() []fetch {
			s := steady(hlsName, 0, 40, 20, 0, seg)
			return append(s, steady(hlsName, 0, 60, 20, s[len(s)-1].at+2*time.Second, seg)...)
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			most, screens := replay(t, strict, fetches)
			if most != 1 {
				t.Errorf("one player seen as %d playing at once", most)
			}
			for i, s := range screens[0] {
				if s != 1 {
					t.Fatalf("fetch %d given screen %d", i, s)
				}
			}
		})
	}
}

// TestPlayersSharingOneStreamAreCounted: 2 to 10 players on one stream,
// each from its own place and at its own pace, or all at the live edge,
// are seen as that many, and the first to play keeps screen 1.
func TestPlayersSharingOneStreamAreCounted(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for players := 2; players <= 10; players++ {
		for _, edge := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d players, live edge %v", players, edge), func(t *testing.T) {
				var all [][]fetch
				for p := range players {
					// A title passed around: each player starts it from the
					// beginning, when it gets the URL.
					first := 0
					begin := time.Duration(p)*30*time.Second + time.Duration(rng.IntN(5000))*time.Millisecond
					// Every player fetches at the pace the media plays.
					seg := 2 * time.Second
					if edge {
						// Live: every player fetches the newest segment as it
						// appears, a moment apart.
						first, seg = int(begin/(2*time.Second)), 2*time.Second
					}
					all = append(all, steady(hlsName, first, 300, 10, begin, seg))
				}
				most, screens := replay(t, strict, all...)
				if most != players {
					t.Errorf("%d players seen as %d", players, most)
				}
				last := screens[0][len(screens[0])-1]
				if !edge && last != 1 {
					t.Errorf("the first player ends on screen %d", last)
				}
			})
		}
	}
}

// TestDetectionIsQuick: two players at steady state are seen within a few
// of their segments.
func TestDetectionIsQuick(t *testing.T) {
	a := steady(hlsName, 0, 60, 0, 0, 2*time.Second)
	b := steady(hlsName, 200, 60, 0, 30*time.Second, 2*time.Second)
	var tr Tracker
	start := time.Unix(1_800_000_000, 0)
	merged := append(append([]fetch{}, a...), b...)
	sort.SliceStable(merged, func(i, j int) bool { return merged[i].at < merged[j].at })
	for _, f := range merged {
		if got := tr.Fetched(f.pos, 0, start.Add(f.at), strict); got.Playing == 2 {
			if late := f.at - 30*time.Second; late > 20*time.Second {
				t.Errorf("two players seen %v after the second started", late)
			}
			return
		}
	}
	t.Fatal("two players never seen")
}

// TestARefusedPlayerStaysItself: a player refused a segment asks for it
// again, or skips it, and is the same playhead either way (not a new one,
// which would play until seen again).
func TestARefusedPlayerStaysItself(t *testing.T) {
	var tr Tracker
	now := time.Unix(1_800_000_000, 0)
	p := func(i int) Position { q, _ := Of(hlsName(i), -1); return q }
	tr.Fetched(p(1), 0, now, strict)
	f := tr.Fetched(p(2), 0, now, strict)
	tr.Refused(f)
	if got := tr.Fetched(p(2), 0, now, strict); got.Head != f.Head || tr.Heads() != 1 {
		t.Fatalf("the retry went to playhead %d of %d", got.Head, tr.Heads())
	}
	tr.Refused(f)
	if got := tr.Fetched(p(4), 0, now, strict); got.Head != f.Head || tr.Heads() != 1 {
		t.Fatalf("the skip went to playhead %d of %d", got.Head, tr.Heads())
	}
	if got := tr.Fetched(p(4), 0, now, strict); got.Head == f.Head {
		t.Fatal("a served playhead took a repeat of its own segment: a second player at the same place would never be seen")
	}
}

func FuzzTracker(f *testing.F) {
	f.Add("seg_1.ts", int64(-1), []byte{1, 2, 3, 200, 4})
	f.Add("filePart9.2.mp4", int64(5), []byte{0, 0, 9})
	f.Fuzz(func(t *testing.T, name string, from int64, steps []byte) {
		Of(name, from)
		var tr Tracker
		now := time.Unix(0, 0)
		for i, b := range steps {
			var p Position
			p.push(uint64(b % 17))
			if i%3 == 0 {
				p.push(uint64(b))
			}
			now = now.Add(time.Duration(b) * 100 * time.Millisecond)
			got := tr.Fetched(p, uint64(b%3), now, strict)
			if got.Screen < 1 || got.Screen > got.Playing || got.Playing > MaxHeads || tr.Heads() > MaxHeads {
				t.Fatalf("fetch %d: %+v with %d playheads", i, got, tr.Heads())
			}
			if b%5 == 0 {
				tr.Refused(got)
			}
		}
	})
}

// TestOneClientFetchingEveryRenditionIsOnePlayback: a recorder (ffmpeg
// with -map 0) fetches the same segment of every rendition turn by turn;
// one client, one playback. Two clients doing the same are two.
func TestOneClientFetchingEveryRenditionIsOnePlayback(t *testing.T) {
	for _, c := range []struct {
		clients []uint64
		want    int
	}{{[]uint64{7, 7}, 1}, {[]uint64{7, 8}, 2}} {
		var tr Tracker
		now := time.Unix(1_800_000_000, 0)
		most := 1
		for i := range 40 {
			for k, client := range c.clients {
				p, _ := Of(fmt.Sprintf("v%d/seg%03d.ts", k, i), -1)
				most = max(most, tr.Fetched(p, client, now, strict).Playing)
				now = now.Add(100 * time.Millisecond)
			}
		}
		if most != c.want {
			t.Errorf("clients %v fetching two renditions turn by turn: seen as %d, want %d", c.clients, most, c.want)
		}
	}
}

// TestARestartReplacesTheOldPlayer: a client opens its title again. A
// reload whose old page still plays: once the new player has moved twice,
// the old one's fetches are Replaced. A player that read its manifest
// again and plays on (ffmpeg's DASH demuxer, a live refresh): never.
func TestARestartReplacesTheOldPlayer(t *testing.T) {
	p := func(i int) Position { q, _ := Of(hlsName(i), -1); return q }
	now := time.Unix(1_800_000_000, 0)
	tick := func() time.Time { now = now.Add(100 * time.Millisecond); return now }
	const me, other = 7, 8

	var tr Tracker
	for i := range 20 {
		tr.Fetched(p(i), me, tick(), strict)
	}
	tr.Restart(tick(), me)
	replaced := 0
	for i := range 10 {
		if f := tr.Fetched(p(i), me, tick(), strict); f.Replaced {
			t.Fatalf("the restarted player's fetch %d was taken for the old one", i)
		}
		if f := tr.Fetched(p(20+i), me, tick(), strict); f.Replaced {
			replaced++
		} else if i >= 2 {
			t.Errorf("the old page's fetch %d after the reload was not replaced", 20+i)
		}
	}
	if replaced == 0 {
		t.Fatal("the old page played on beside its reload")
	}

	var again Tracker
	for i := range 20 {
		again.Fetched(p(i), me, tick(), strict)
	}
	again.Restart(tick(), me)
	for i := 20; i < 60; i++ {
		if f := again.Fetched(p(i), me, tick(), strict); f.Replaced {
			t.Fatalf("a player that read its manifest again was replaced at its fetch %d", i)
		}
		// another machine's player on the stream is not this client's restart
		if f := again.Fetched(p(i-15), other, tick(), strict); f.Replaced {
			t.Fatalf("another client's player was replaced at its fetch %d", i-15)
		}
	}
}

// TestAReloadedPlayerComesByItsOldPlace: after a reload whose old page is
// gone, the new player plays through the place the old one had reached,
// and seeks just past it: never Replaced.
func TestAReloadedPlayerComesByItsOldPlace(t *testing.T) {
	p := func(i int) Position { q, _ := Of(hlsName(i), -1); return q }
	now := time.Unix(1_800_000_000, 0)
	var tr Tracker
	for i := range 20 {
		tr.Fetched(p(i), 7, now, strict)
		now = now.Add(100 * time.Millisecond)
	}
	tr.Restart(now, 7)
	for _, i := range append(seq(0, 30), seq(20, 25)...) {
		now = now.Add(100 * time.Millisecond)
		if f := tr.Fetched(p(i), 7, now, strict); f.Replaced {
			t.Fatalf("the reloaded player was taken for its old page at segment %d", i)
		}
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// BenchmarkFetched is one segment fetch of a stream's one player: the
// position read from the name, then placed.
func BenchmarkFetched(b *testing.B) {
	names := make([]string, 1000)
	for i := range names {
		names[i] = hlsName(i)
	}
	var tr Tracker
	now := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	for i := range b.N {
		p, _ := Of(names[i%len(names)], -1)
		if i%len(names) == 0 {
			tr = Tracker{}
		}
		tr.Fetched(p, 7, now, strict)
	}
}
