// Package playhead tells how many players are fetching one stream, from
// the positions of the segments they ask for and nothing else: not their
// addresses, which change under one player (Wi-Fi to mobile data, IPv4 to
// IPv6, iCloud Private Relay) and are shared by many (carrier NAT).
//
// One player fetches its title's segments in order. A seek starts it
// again elsewhere and the old position is never fetched on from; an ABR
// switch fetches the next segment of another rendition, which has the same
// number; a retry fetches one segment again, once. Several players on one
// stream each fetch in order, from their own position, and turn by turn:
// the fetches of one interleave with the fetches of the others, for as
// long as they all play. A Tracker follows every position fetched from
// (a playhead) and counts, for each, how often it took its turn back from
// another one that had moved meanwhile: playheads that keep doing so are
// players playing at once.
//
// Where several playheads could have made a fetch (players a segment
// apart, at a live edge), the one whose last fetch came from the same
// client (a hash of its address and User-Agent, say) makes it: a hint
// that keeps each player itself, never a reason to count one more. And
// playheads moved by one client turn by turn are that client's one
// playback: a recorder fetching every rendition at once, two video tracks
// of one player.
package playhead

import (
	"time"
)

// Position is where a segment lies in its title: the segment number its
// file name carries (with its part number, for a low-latency part), then
// the offset of the byte range asked for. Positions compare in that order.
type Position struct {
	n   [maxNumbers]uint64
	len uint8
}

const maxNumbers = 3

// Of returns the position of a segment whose file name (the last segment
// of its path) is name, fetched from byte offset from, or -1 when the
// whole file was asked for. ok is false when neither the name nor a range
// says where it lies (a name with no number, fetched whole).
//
// The segment number is the last number in the name before its extension
// ("seg_00042.ts", "chunk-stream0-00042.m4s", "1080p_42.ts", "t120000.m4s"
// with $Time$), so that the renditions of an ABR ladder, whose names
// differ by a number earlier on, agree. A part ("filePart271.3.mp4",
// "seg271_part3.m4s") is the segment's number then its own.
func Of(name string, from int64) (p Position, ok bool) {
	stem := name
	if dot := lastByte(stem, '.'); dot >= 0 && hasLetter(stem[dot+1:]) {
		stem = stem[:dot] // the extension: ".ts", ".m4s", ".mp4"
	}
	last, lastStart, lastOK := lastNumber(stem)
	if lastOK {
		between := stem[:lastStart]
		prev, prevStart, prevOK := lastNumber(between)
		if prevOK && isPartSeparator(between[prevStart+digits(between[prevStart:]):]) {
			p.push(prev)
		}
		p.push(last)
	}
	if from >= 0 {
		p.push(uint64(from))
	}
	return p, p.len > 0
}

func (p *Position) push(v uint64) {
	if int(p.len) < maxNumbers {
		p.n[p.len] = v
		p.len++
	}
}

// Compare returns -1, 0 or +1 as p lies before, at or after q. A position
// that is a prefix of another (a whole segment, its first part) lies before
// it.
func (p Position) Compare(q Position) int {
	for i := 0; i < int(min(p.len, q.len)); i++ {
		switch {
		case p.n[i] < q.n[i]:
			return -1
		case p.n[i] > q.n[i]:
			return +1
		}
	}
	switch {
	case p.len < q.len:
		return -1
	case p.len > q.len:
		return +1
	}
	return 0
}

// lastNumber finds the last run of decimal digits in s: its value (ok
// false when s has none, or when it overflows) and where it starts.
func lastNumber(s string) (v uint64, start int, ok bool) {
	end := len(s)
	for end > 0 && !isDigit(s[end-1]) {
		end--
	}
	if end == 0 {
		return 0, 0, false
	}
	start = end
	for start > 0 && isDigit(s[start-1]) {
		start--
	}
	for _, c := range []byte(s[start:end]) {
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, 0, false
		}
		v = v*10 + d
	}
	return v, start, true
}

func digits(s string) int {
	n := 0
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	return n
}

// isPartSeparator reports whether what lies between two numbers of a
// name makes the second a part of the first: "271.3", "271_part3",
// "271-p3".
func isPartSeparator(s string) bool {
	switch lower(s) {
	case ".", "_part", "-part", ".part", "_p", "-p", ".p", "part":
		return true
	}
	return false
}

func lower(s string) string {
	if len(s) > 8 {
		return ""
	}
	var b [8]byte
	for i := range len(s) {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return string(b[:len(s)])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func hasLetter(s string) bool {
	for i := range len(s) {
		if c := s[i] | 0x20; 'a' <= c && c <= 'z' {
			return true
		}
	}
	return false
}

func lastByte(s string, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// Rules say how sure a Tracker must be before it counts several players:
// a playhead plays beside others once it has taken its turn back Turns
// times within Within. A turn counts only when the playhead had itself
// moved within Within/4 before, so that a retry that happens to move an
// old, abandoned position on is not taken for a player.
type Rules struct {
	Turns  int
	Within time.Duration
}

// MaxHeads is how many positions a Tracker follows at once; past it, the
// one that moved least recently is forgotten. Bounded, whatever a client
// sends.
const MaxHeads = 16

// maxTurns is how many turns a playhead remembers: no rule asks for more.
const maxTurns = 8

// A playhead moves by about one step per fetch (its last move, or the
// stream's): up to one and a half, for segments of uneven length ($Time$
// names). A jump further is a seek, or another player, and starts a
// playhead of its own.
func withinStep(d, scale uint64) bool { return scale == 0 || d <= scale+scale/2 }

// Tracker follows the playheads of one stream. The zero Tracker is ready;
// it is not safe for concurrent use. It holds a few hundred bytes per
// playhead, and MaxHeads at most.
type Tracker struct {
	heads  []head
	last   uint32                 // the serial of the playhead that moved last (0: none)
	lastBy uint64                 // the client that moved it
	serial uint32                 // the last serial given
	step   [maxNumbers + 1]uint64 // the stream's last move, by the number it changed
	// restartAt and restartBy are when and by which client the title was
	// last opened again (Restart).
	restartAt int64
	restartBy uint64
}

type head struct {
	serial uint32
	at     Position
	born   int64 // unix nanoseconds, as every time here
	moved  int64
	moves  uint32
	step   [maxNumbers + 1]uint64 // its last move, by the number it changed
	turns  [maxTurns]int64        // when it took its turn back, a ring
	nturns int
	client uint64 // who made its last fetch (a hint, see the package doc)
	// refused is set when its last fetch was refused: its player will ask
	// for that segment again, or skip it, and is still the same player.
	refused bool
	// stale marks a playhead its client had before it opened the title
	// again, until it has moved twice since (the same player, which read
	// its manifest again) or a playhead of the restart has (its player
	// was restarted: Fetch.Replaced).
	stale      bool
	staleMoves uint8
}

// Fetch is what a Tracker made of one fetch.
type Fetch struct {
	// Head is the serial of the playhead that fetched (1 for the first).
	Head uint32
	// Screen is the playhead's rank, by age, among those playing at once:
	// 1 when it plays alone (or is not seen to play beside others).
	Screen int
	// Playing is how many playheads play at once (at least 1).
	Playing int
	// Born is when the playhead was first seen.
	Born time.Time
	// Replaced says the fetch is of a player its client has restarted
	// (Restart): the restarted one plays, this one still fetches.
	Replaced bool
}

// Restart records that client opened the title again at now (a reload, a
// player starting over): the playhead it moved last is stale, and its
// others, places it left before, are forgotten. The stale one, if it moves
// on after a playhead of the restart has moved twice, is the player the
// restart replaced (a reload whose old page still plays); if it moves
// twice first, it was the same player reading its manifest again.
func (t *Tracker) Restart(now time.Time, client uint64) {
	if client == 0 {
		return
	}
	t.restartAt, t.restartBy = now.UnixNano(), client
	last := -1
	for i := range t.heads {
		if h := &t.heads[i]; h.client == client && (last < 0 || h.moved > t.heads[last].moved) {
			last = i
		}
	}
	if last < 0 {
		return
	}
	t.heads[last].stale, t.heads[last].staleMoves = true, 0
	kept := t.heads[:0]
	for _, h := range t.heads {
		if h.client != client || h.stale {
			kept = append(kept, h)
		}
	}
	clear(t.heads[len(kept):])
	t.heads = kept
}

// restarted is how far the restart's playheads have got: the most moves
// of one of them.
func (t *Tracker) restarted() uint32 {
	var most uint32
	for i := range t.heads {
		if h := &t.heads[i]; !h.stale && h.client == t.restartBy && h.born >= t.restartAt {
			most = max(most, h.moves)
		}
	}
	return most
}

// Fetched records a fetch of position p by client (0: unknown) at time
// now and tells which playhead made it and how many play at once.
func (t *Tracker) Fetched(p Position, client uint64, now time.Time, r Rules) Fetch {
	ns := now.UnixNano()
	h := t.follow(p, client)
	if h == nil {
		h = t.add(ns)
	}
	if h.moves > 0 {
		if t.last != 0 && t.last != h.serial && (client == 0 || client != t.lastBy) && ns-h.moved <= int64(r.Within/4) {
			// It moves again after another moved: it took its turn back.
			h.turns[h.nturns%maxTurns] = ns
			h.nturns++
		}
		if i, d := stepTo(h.at, p); d > 0 && !h.refused {
			h.step[i], t.step[i] = d, d
		}
	}
	h.refused, h.client = false, client
	h.at, h.moved = p, ns
	h.moves++
	t.last, t.lastBy = h.serial, client
	f := t.rank(h, ns, r)
	switch {
	case h.stale && t.restarted() >= 2:
		f.Replaced = true
	case h.stale:
		if h.staleMoves++; h.staleMoves >= 2 {
			h.stale = false
		}
	case t.restartAt != 0 && h.client == t.restartBy && h.born >= t.restartAt:
		// The restarted player has played on and the one before did not
		// fetch meanwhile, or the restarted one has come by its place: it
		// is gone (a reload's old page), its place nobody's.
		t.forgetStale(h.moves >= abandonedAfter, h.at)
	}
	return f
}

// abandonedAfter is how many fetches of a restarted player show that the
// player before it is gone, if it fetched none meanwhile.
const abandonedAfter = 6

// forgetStale forgets the playheads of before the restart that have not
// moved since: all of them when abandoned, else those at or behind
// passed.
func (t *Tracker) forgetStale(abandoned bool, passed Position) {
	kept := t.heads[:0]
	for _, h := range t.heads {
		if !h.stale || h.moved >= t.restartAt || !abandoned && h.at.Compare(passed) > 0 {
			kept = append(kept, h)
		}
	}
	clear(t.heads[len(kept):])
	t.heads = kept
	for _, h := range t.heads {
		if h.stale {
			return
		}
	}
	t.restartAt, t.restartBy = 0, 0 // nothing left of before the restart
}

// stepTo is the move from a to b (b after a): the first number that
// differs, and by how much.
func stepTo(a, b Position) (i int, d uint64) {
	for i = 0; i < int(min(a.len, b.len)); i++ {
		if a.n[i] != b.n[i] {
			return i, b.n[i] - a.n[i]
		}
	}
	if b.len > a.len {
		return i, b.n[i] + 1
	}
	return i, 0
}

// Refused records that the fetch f was refused. Its player is still
// there: it will ask for the same segment again (a retry) or for the next
// (it skips what it could not have), and either moves the same playhead,
// until a fetch of it is served. (A playhead would otherwise be new on
// each, seen playing only after its turns again.)
func (t *Tracker) Refused(f Fetch) {
	for i := range t.heads {
		if h := &t.heads[i]; h.serial == f.Head {
			h.refused = true
		}
	}
}

// follow returns the playhead a fetch of p by client moves on: one
// behind p by about a step (withinStep), or a refused one that p asks
// for again or skips to; of those, client's own first, then one not
// refused, then the nearest, the most moved, the oldest. nil when there
// is none (the first fetch, a seek, a second player).
func (t *Tracker) follow(p Position, client uint64) *head {
	var best *head
	better := func(h *head) bool {
		if mine, theirs := client != 0 && h.client == client, client != 0 && best.client == client; mine != theirs {
			return mine
		}
		if h.stale != best.stale {
			return !h.stale // a restart's player before the one it replaced
		}
		if h.refused != best.refused {
			return !h.refused
		}
		switch c := h.at.Compare(best.at); {
		case c != 0:
			return c > 0
		case h.moves != best.moves:
			return h.moves > best.moves
		}
		return h.serial < best.serial
	}
	for i := range t.heads {
		h := &t.heads[i]
		switch c := h.at.Compare(p); {
		case c > 0, c == 0 && !h.refused:
			continue
		}
		n, d := stepTo(h.at, p)
		scale := h.step[n]
		if scale == 0 {
			scale = t.step[n]
		}
		if h.refused && scale != 0 && d <= 2*scale+scale/2 {
			// its player asks again, or skips the segment it was refused
		} else if !withinStep(d, scale) {
			continue
		}
		if best == nil || better(h) {
			best = h
		}
	}
	return best
}

// add starts following a new playhead, forgetting the one that moved
// least recently when MaxHeads are followed.
func (t *Tracker) add(now int64) *head {
	if len(t.heads) == MaxHeads {
		stalest := 0
		for i := range t.heads {
			if t.heads[i].moved < t.heads[stalest].moved {
				stalest = i
			}
		}
		t.remove(stalest)
	}
	t.serial++
	t.heads = append(t.heads, head{serial: t.serial, born: now})
	return &t.heads[len(t.heads)-1]
}

func (t *Tracker) remove(i int) {
	t.heads = append(t.heads[:i], t.heads[i+1:]...)
}

// rank tells where h stands among the playheads playing at once.
func (t *Tracker) rank(h *head, now int64, r Rules) Fetch {
	f := Fetch{Head: h.serial, Screen: 1, Playing: 1, Born: time.Unix(0, h.born)}
	if !plays(h, now, r) {
		return f
	}
	playing, older := 0, 0
	for i := range t.heads {
		o := &t.heads[i]
		if plays(o, now, r) {
			playing++
			if o.serial < h.serial {
				older++
			}
		}
	}
	if playing > 1 {
		f.Screen, f.Playing = older+1, playing
	}
	return f
}

// plays reports whether h has taken its turn back often enough lately to
// be a player beside others.
func plays(h *head, now int64, r Rules) bool {
	if r.Turns <= 0 {
		return false
	}
	recent := 0
	for i := range min(h.nturns, maxTurns) {
		if now-h.turns[i] <= int64(r.Within) {
			recent++
		}
	}
	return recent >= min(r.Turns, maxTurns)
}

// Playing tells how many playheads play at once, as of now.
func (t *Tracker) Playing(now time.Time, r Rules) int {
	n := 0
	for i := range t.heads {
		if plays(&t.heads[i], now.UnixNano(), r) {
			n++
		}
	}
	return max(n, 1)
}

// Heads returns how many playheads are followed.
func (t *Tracker) Heads() int { return len(t.heads) }
