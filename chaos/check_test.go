package chaos

import (
	"testing"
	"time"
)

var (
	t0    = time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	rules = Rules{Limit: 3, Lease: 3 * time.Second, Slack: time.Second, CutWithin: 500 * time.Millisecond, ShareFetches: 4}
)

// at is t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// req is a request of stream of user u in zone, served from a to b seconds.
func req(zone, u, stream string, a, b float64) Served {
	return Served{Zone: zone, User: u, Stream: stream, Via: "c1", Start: at(a), End: at(b)}
}

func TestCheckCountsDistinctStreamsAtTheOrigin(t *testing.T) {
	cases := []struct {
		name               string
		served             []Served
		events             []Event
		violations, excuse int
		windows            string
	}{
		{name: "three at once, limit 3", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
		}},
		{name: "a stream's requests side by side are one stream", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10),
			req("deny", "u", "c", 2, 10), req("deny", "u", "c", 3, 4),
		}},
		{name: "one ends as another begins", served: []Served{
			req("deny", "u", "a", 0, 5), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
			req("deny", "u", "d", 5, 10),
		}},
		{name: "other users do not count", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
			req("deny", "v", "d", 3, 10), req("allow", "u", "e", 3, 10),
		}},
		{name: "a fourth", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
			req("deny", "u", "d", 3, 4),
		}, violations: 1},
		{name: "a fourth while an instance is paused", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
			req("deny", "u", "d", 5, 6),
		}, events: []Event{{Kind: PauseCaddy, Target: "c2", Start: at(1), End: at(5)}}, excuse: 1, windows: "pause caddy c2"},
		{name: "a fourth past the pause's window", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
			req("deny", "u", "d", 5, 8),
		}, events: []Event{{Kind: PauseCaddy, Target: "c2", Start: at(1), End: at(5)}}, violations: 1},
		{name: "a store fault", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
			req("deny", "u", "d", 3, 4),
		}, events: []Event{{Kind: PauseRedis, Target: "redis", Start: at(2), End: at(4)}}, excuse: 1, windows: "pause redis redis"},
		{name: "a store fault on one instance's link", served: []Served{
			req("allow", "u", "a", 0, 10), req("allow", "u", "b", 1, 10), req("allow", "u", "c", 2, 10),
			req("allow", "u", "d", 3, 4),
		}, events: []Event{{Kind: Partition, Target: "c1", Start: at(2), End: at(4)}}, excuse: 1, windows: "partition c1"},
		{name: "windows that follow each other cover as one", served: []Served{
			req("allow", "u", "a", 0, 20), req("allow", "u", "b", 1, 20), req("allow", "u", "c", 2, 20),
			req("allow", "u", "d", 3, 9),
		}, events: []Event{
			{Kind: PauseRedis, Target: "redis", Start: at(2), End: at(4)},
			{Kind: PauseCaddy, Target: "c3", Start: at(5), End: at(7)},
		}, excuse: 1, windows: "pause redis redis, pause caddy c3"},
		{name: "windows with a gap between", served: []Served{
			req("allow", "u", "a", 0, 30), req("allow", "u", "b", 1, 30), req("allow", "u", "c", 2, 30),
			req("allow", "u", "d", 3, 25),
		}, events: []Event{
			{Kind: PauseRedis, Target: "redis", Start: at(2), End: at(4)},
			{Kind: PauseCaddy, Target: "c3", Start: at(20), End: at(22)},
		}, violations: 1},
		{name: "a limit lowered: what plays plays on", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
		}, events: []Event{{Kind: Override, Zone: "deny", User: "u", Limit: 1, Start: at(3)}}},
		{name: "a limit lowered: a new stream beyond it", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 11, 20), req("deny", "u", "c", 12, 20),
		}, events: []Event{{Kind: Override, Zone: "deny", User: "u", Limit: 1, Start: at(3)}}, violations: 1},
		{name: "a limit raised with no answer: it may take effect whenever", served: []Served{
			req("deny", "u", "a", 20, 30), req("deny", "u", "b", 21, 30), req("deny", "u", "c", 22, 30),
			req("deny", "u", "d", 23, 30),
		}, events: []Event{
			{Kind: Override, Zone: "deny", User: "u", Limit: 4, Start: at(0), End: at(3), Indeterminate: true},
			{Kind: Override, Zone: "deny", User: "u", Limit: 3, Start: at(10)},
		}},
		{name: "a limit raised, then cleared", served: []Served{
			req("deny", "u", "a", 0, 10), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
			req("deny", "u", "d", 3, 10), req("deny", "u", "e", 12, 13), req("deny", "u", "f", 12, 13),
			req("deny", "u", "g", 12, 13), req("deny", "u", "h", 12, 13),
		}, events: []Event{
			{Kind: Override, Zone: "deny", User: "u", Limit: 4, Start: at(0)},
			{Kind: Override, Zone: "deny", User: "u", Limit: 0, Start: at(11)},
		}, violations: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := Check(rules, c.served, nil, c.events)
			if len(rep.Violations) != c.violations || len(rep.Excused) != c.excuse {
				t.Fatalf("violations %v, excused %v; want %d and %d", rep.Violations, rep.Excused, c.violations, c.excuse)
			}
			if c.excuse > 0 {
				if got := rep.Excused[0].Windows; joined(got) != c.windows {
					t.Errorf("excused in %q, want %q", joined(got), c.windows)
				}
			}
			if len(rep.Violations)+len(rep.Excused) == 0 && !rep.OK() {
				t.Errorf("not OK: %s", rep)
			}
		})
	}
}

func joined(s []string) string {
	out := ""
	for i, k := range s {
		if i > 0 {
			out += ", "
		}
		out += k
	}
	return out
}

func TestCheckClosedStreams(t *testing.T) {
	attempts := []Attempt{{Zone: "deny", User: "u", Stream: "a", ID: "id-a", Status: 200, At: at(0)}}
	closeA := Event{Kind: Close, Zone: "deny", User: "u", ID: "id-a", Start: at(4.9), End: at(5)}
	// The closed stream is counted until its close: a fourth after it is
	// within the limit, though the origin still serves it within the
	// renewal interval (1 s) and the slack (1 s).
	served := []Served{
		req("deny", "u", "a", 0, 6.5), req("deny", "u", "b", 1, 10), req("deny", "u", "c", 2, 10),
		req("deny", "u", "d", 5.1, 10),
	}
	if rep := Check(rules, served, attempts, []Event{closeA}); !rep.OK() || len(rep.Excused) != 0 {
		t.Errorf("closed stream cut within its window: %s", rep)
	}
	served[0].End = at(7.5)
	if rep := Check(rules, served, attempts, []Event{closeA}); len(rep.ServedAfterClose) != 1 || len(rep.Violations) != 0 {
		t.Errorf("closed stream served 2.5 s on: %s", rep)
	}
	served = append(served, req("deny", "u", "a", 8, 9))
	if rep := Check(rules, served, attempts, []Event{closeA}); len(rep.ServedAfterClose) != 2 {
		t.Errorf("closed stream's request 3 s after its close, served 1 s: %s", rep)
	}
	// Its instance paused past the close: cut once it woke, and renewed.
	pause := Event{Kind: PauseCaddy, Target: "c1", Start: at(4), End: at(8)}
	if rep := Check(rules, served, attempts, []Event{closeA, pause}); len(rep.ServedAfterClose) != 0 {
		t.Errorf("closed stream served on by an instance paused past the close: %s", rep)
	}
	pause.Target = "c2"
	if rep := Check(rules, served, attempts, []Event{closeA, pause}); len(rep.ServedAfterClose) != 2 {
		t.Errorf("closed stream served on while another instance was paused: %s", rep)
	}
	// A request asked for later, through an instance not yet told of the
	// close, served until the store call beside it answers: cut in time.
	served[len(served)-1].End = at(8.1)
	if rep := Check(rules, served, attempts, []Event{closeA}); len(rep.ServedAfterClose) != 1 || rep.CutAfterClose != 1 {
		t.Errorf("closed stream's request 3 s after its close, cut in 100 ms: %s", rep)
	}
}

func TestCheckClosesOfSharedStreams(t *testing.T) {
	owner := Attempt{Zone: "deny", User: "u", Stream: "a", ID: "id-a", Status: 200, At: at(0)}
	sharer := Attempt{Zone: "deny", User: "u", Stream: "a/m1", Shares: "a", Status: 200, At: at(2)}
	playing := []Served{req("deny", "u", "b", 0, 7), req("deny", "u", "c", 0, 7)}
	closeA := Event{Kind: Close, Zone: "deny", User: "u", ID: "id-a", Start: at(4.9), End: at(5)}
	// The stream's owner stopped; a machine it was passed to plays it
	// alone, and is cut with it when it is closed: its slot went to d.
	served := append(segments("u", "a", "c1", 0, 2), segments("u", "a/m1", "c1", 2, 6)...)
	served = append(append(served, playing...), req("deny", "u", "d", 5.1, 7))
	if rep := Check(rules, served, []Attempt{owner, sharer}, []Event{closeA}); !rep.OK() {
		t.Errorf("a shared screen of a stream closed: %s", rep)
	}
	// A close of an id no viewer was given (a shared screen's own slot)
	// frees a slot for a renewal interval and the slack after its 204.
	closeScreen := Event{Kind: Close, Zone: "deny", User: "u", ID: "screen", Start: at(4.9), End: at(5)}
	served = append(append(segments("u", "a", "c1", 0, 7), playing...), req("deny", "u", "d", 5.1, 7))
	if rep := Check(rules, served, []Attempt{owner}, []Event{closeScreen}); !rep.OK() {
		t.Errorf("a screen's own slot closed: %s", rep)
	}
	served = append(append(segments("u", "a", "c1", 0, 9), req("deny", "u", "b", 0, 9), req("deny", "u", "c", 0, 9)), req("deny", "u", "d", 5.1, 9))
	if rep := Check(rules, served, []Attempt{owner}, []Event{closeScreen}); len(rep.Violations) != 1 {
		t.Errorf("4 streams on past the window of a screen's slot closed: %s", rep)
	}
}

func TestCheckRefusals(t *testing.T) {
	honest := func(stream string, a float64, status int, ended float64, clean bool) Attempt {
		at := Attempt{Zone: "deny", User: "u", Stream: stream, Honest: true, At: at(a), Status: status, Clean: clean}
		if ended > 0 {
			at.Ended = t0.Add(time.Duration(ended * float64(time.Second)))
		}
		return at
	}
	cases := []struct {
		name     string
		attempts []Attempt
		events   []Event
		wrongful int
	}{
		{name: "at the limit", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("b", 1, 200, 0, false), honest("c", 2, 200, 0, false),
			honest("d", 3, 429, 0, false),
		}},
		{name: "under the limit", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("b", 1, 200, 0, false), honest("d", 3, 429, 0, false),
		}, wrongful: 1},
		{name: "a stream left silent still holds its slot", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("b", 1, 200, 0, false), honest("c", 2, 200, 4, false),
			honest("d", 5, 429, 0, false),
		}},
		{name: "a stream closed frees its slot", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("b", 1, 200, 0, false), honest("c", 2, 200, 4, true),
			honest("d", 6, 429, 0, false),
		}, wrongful: 1},
		{name: "the store down", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("d", 3, 503, 0, false),
		}, events: []Event{{Kind: PauseRedis, Target: "redis", Start: at(2), End: at(4)}}},
		{name: "the store down long ago", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("d", 30, 503, 0, false),
		}, events: []Event{{Kind: PauseRedis, Target: "redis", Start: at(2), End: at(4)}}, wrongful: 1},
		{name: "a sharer's refusal is no honest viewer's", attempts: []Attempt{
			{Zone: "deny", User: "u", Stream: "a", At: at(0), Status: 429},
		}},
		{name: "a stopped player holds its slot while its media plays", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("b", 1, 200, 0, false),
			withMedia(honest("c", 2, 200, 4, false), 10), honest("d", 14, 429, 0, false),
		}},
		{name: "and a lease after", attempts: []Attempt{
			honest("a", 0, 200, 0, false), honest("b", 1, 200, 0, false),
			withMedia(honest("c", 2, 200, 4, false), 10), honest("d", 16, 429, 0, false),
		}, wrongful: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := Check(rules, nil, c.attempts, c.events)
			if len(rep.WrongfulRefusals) != c.wrongful {
				t.Errorf("wrongful refusals: %v, want %d", rep.WrongfulRefusals, c.wrongful)
			}
		})
	}
}

func withMedia(a Attempt, mediaEnd float64) Attempt {
	a.MediaEnd = at(mediaEnd)
	return a
}

func TestCheckCutsWhilePlaying(t *testing.T) {
	cut := Attempt{Zone: "deny", User: "u", Stream: "a", ID: "id-a", Honest: true, At: at(0), Status: 200, Cut: 409, CutAt: at(5)}
	cases := []struct {
		name     string
		events   []Event
		wrongful int
	}{
		{name: "cut, neither closed nor in a fault", wrongful: 1},
		{name: "cut after its close", events: []Event{{Kind: Close, Zone: "deny", User: "u", ID: "id-a", Start: at(4.5), End: at(4.6)}}},
		{name: "cut before its close", events: []Event{{Kind: Close, Zone: "deny", User: "u", ID: "id-a", Start: at(6), End: at(6.1)}}, wrongful: 1},
		{name: "cut in a fault", events: []Event{{Kind: PauseRedis, Target: "redis", Start: at(3), End: at(4)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := Check(rules, nil, []Attempt{cut}, c.events)
			if len(rep.WrongfulCuts) != c.wrongful || rep.OK() != (c.wrongful == 0) {
				t.Errorf("wrongful cuts: %v, want %d", rep.WrongfulCuts, c.wrongful)
			}
		})
	}
}

// segments are the fetches of a player of stream through via: one every
// second from a to b, each served in 100 ms and holding 1 s of media.
func segments(u, stream, via string, a, b float64) []Served {
	var out []Served
	for s := a; s < b; s++ {
		r := req("deny", u, stream, s, s+0.1)
		r.Via, r.Media = via, time.Second
		out = append(out, r)
	}
	return out
}

func TestCheckSegmentsAndSharedScreens(t *testing.T) {
	playing := []Served{req("deny", "u", "b", 0, 30), req("deny", "u", "c", 0, 30)}
	owner := segments("u", "a", "c1", 0, 30)
	sharer := Attempt{Zone: "deny", User: "u", Stream: "a/m1", Shares: "a", At: at(0.5), Status: 200}
	cases := []struct {
		name               string
		served             [][]Served
		attempts           []Attempt
		violations, excuse int
		windows            string
	}{
		{name: "a player between its fetches is playing", served: [][]Served{
			playing, segments("u", "a", "c1", 0, 10), {req("deny", "u", "d", 1.5, 1.6)},
		}, violations: 1},
		{name: "once its media has run out it is not", served: [][]Served{
			playing, segments("u", "a", "c1", 0, 3), {req("deny", "u", "d", 4.5, 6)},
		}},
		{name: "a shared screen beside its stream, never told apart", served: [][]Served{
			playing, owner, segments("u", "a/m1", "c1", 0.5, 30),
		}, attempts: []Attempt{sharer}, violations: 1},
		{name: "told apart, and refused", served: [][]Served{
			playing, owner, segments("u", "a/m1", "c1", 0.5, 4),
		}, attempts: []Attempt{sharer}, excuse: 1, windows: notToldApart},
		{name: "a shared screen on another instance is counted there apart", served: [][]Served{
			playing, owner, segments("u", "a/m1", "c2", 0.5, 30),
		}, attempts: []Attempt{sharer}, excuse: 1, windows: acrossInstances},
		{name: "a title opened again by its client is its stream continued", served: [][]Served{
			playing, segments("u", "a", "c1", 0, 5), {req("deny", "u", "a2", 4.5, 4.5)}, segments("u", "a2", "c1", 5, 10),
		}, attempts: []Attempt{
			{Zone: "deny", User: "u", Stream: "a", ID: "x", At: at(0), Status: 200},
			{Zone: "deny", User: "u", Stream: "a2", ID: "x", At: at(4.5), Status: 200},
		}},
		{name: "another start beside it is another stream", served: [][]Served{
			playing, segments("u", "a", "c1", 0, 5), {req("deny", "u", "a2", 4.5, 4.5)}, segments("u", "a2", "c1", 5, 10),
		}, attempts: []Attempt{
			{Zone: "deny", User: "u", Stream: "a", ID: "x", At: at(0), Status: 200},
			{Zone: "deny", User: "u", Stream: "a2", ID: "y", At: at(4.5), Status: 200},
		}, violations: 1},
		{name: "a shared screen alone on its stream is its one player", served: [][]Served{
			playing, segments("u", "a", "c1", 0, 3), segments("u", "a/m1", "c1", 10, 20), {req("deny", "u", "d", 12, 13)},
		}, attempts: []Attempt{sharer}, violations: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var served []Served
			for _, s := range c.served {
				served = append(served, s...)
			}
			rep := Check(rules, served, c.attempts, nil)
			if len(rep.Violations) != c.violations || len(rep.Excused) != c.excuse {
				t.Fatalf("violations %v, excused %v; want %d and %d", rep.Violations, rep.Excused, c.violations, c.excuse)
			}
			if c.excuse > 0 {
				if got := joined(rep.Excused[0].Windows); got != c.windows {
					t.Errorf("excused in %q, want %q", got, c.windows)
				}
			}
		})
	}
}

func TestPlayed(t *testing.T) {
	cases := []struct {
		name           string
		before, now, d float64
		want           float64
	}{
		{name: "run out: from now", before: 2, now: 5, d: 1, want: 6},
		{name: "still playing: after what was served", before: 7, now: 5, d: 1, want: 8},
		{name: "at most max_buffer ahead", before: 14, now: 5, d: 1, want: 13},
	}
	for _, c := range cases {
		got := Played(at(c.before), at(c.now), time.Duration(c.d*float64(time.Second)), 8*time.Second)
		if !got.Equal(at(c.want)) {
			t.Errorf("%s: %v, want %v", c.name, got.Sub(t0), at(c.want).Sub(t0))
		}
	}
}
