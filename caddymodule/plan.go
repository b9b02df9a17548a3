package caddymodule

import (
	"bytes"
	"hash/maphash"
	"strings"
	"sync"

	"github.com/streamlimit/caddy-streamlimit/manifest"
)

// A rewrite plan says where an HLS playlist's URIs take their stream's
// token: at which bytes each URI's directory part is cut, and which of a
// few tokenized prefixes goes there. It depends on the playlist's bytes
// alone, not on the stream, so it is worked out once per playlist and
// shared: every viewer of a live channel reads the same playlist, again
// every target duration. A stream applies a plan with its own prefixes
// (kept for the stream, see tokenizer.prefixFor), one copy of the body
// with the prefixes spliced in, without reading the playlist again.
//
// Only playlists whose every URI takes the common way (plainIndex) get a
// plan; the others are rewritten in full each time, as all were before.
type plan struct {
	body       []byte // the playlist, as the origin served it
	aux, video bool   // the tokenizer's view of its tracks, which the extras depend on
	keys       []planKey
	edits      []planEdit
}

// planKey is one prefix of a plan: its key, and a URI like those that
// take it (its role, media and track make the token's extra).
type planKey struct {
	key  prefixKey
	like manifest.Ref
}

// planEdit cuts body[start:cut] (the URI's directory, if any) and puts
// the prefix of keys[key] there.
type planEdit struct {
	start, cut, key int
}

// Bounds on what plans hold: any number of streams read any number of
// playlists, and the plans of the playlists read most recently are those
// worth keeping.
const (
	maxPlans     = 512
	maxPlanBytes = 16 << 20 // bodies and edits, roughly
	// maxPlanBody is the largest playlist planned: a larger one is
	// rewritten in full (and is read rarely: a VOD playlist, once).
	maxPlanBody = 1 << 20
)

// plans are the plans of this process.
var plans = planCache{byHash: map[uint64]*plan{}}

type planCache struct {
	mu     sync.Mutex
	byHash map[uint64]*plan
	bytes  int
}

var planSeed = maphash.MakeSeed()

func planHash(body []byte, aux, video bool) uint64 {
	h := maphash.Bytes(planSeed, body)
	if aux {
		h ^= 0x9e3779b97f4a7c15
	}
	if video {
		h ^= 0xc2b2ae3d27d4eb4f
	}
	return h
}

// find returns the plan for a playlist, if one is kept.
func (c *planCache) find(body []byte, aux, video bool) *plan {
	h := planHash(body, aux, video)
	c.mu.Lock()
	p := c.byHash[h]
	c.mu.Unlock()
	if p == nil || p.aux != aux || p.video != video || !bytes.Equal(p.body, body) {
		return nil
	}
	return p
}

// add keeps a plan, making room for it.
func (c *planCache) add(p *plan) {
	size := p.size()
	h := planHash(p.body, p.aux, p.video)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.byHash[h]; old != nil {
		c.bytes -= old.size()
		delete(c.byHash, h)
	}
	// Any plans go to make room (a map's order is as good as any: the
	// live playlists read most will be planned again at their next
	// version, every few seconds, whichever go).
	for k, old := range c.byHash {
		if len(c.byHash) < maxPlans && c.bytes+size <= maxPlanBytes {
			break
		}
		c.bytes -= old.size()
		delete(c.byHash, k)
	}
	c.byHash[h] = p
	c.bytes += size
}

func (p *plan) size() int {
	return len(p.body) + 24*len(p.edits) + 128*len(p.keys) + 128
}

// apply writes the playlist with tz's stream's prefixes into dst's
// array; false when a prefix cannot be made or written where URIs stand
// (the caller then rewrites in full, which says why).
func (p *plan) apply(dst []byte, tz *tokenizer) ([]byte, bool) {
	var stack [8]string
	prefixes := stack[:0]
	for _, k := range p.keys {
		prefix, ok := tz.prefixFor(k.key, k.like)
		// In a URI line or a quoted attribute: no line break, quote, or
		// (first) a '#' that would make a line a comment.
		if !ok || strings.ContainsAny(prefix, "\r\n\"") || strings.HasPrefix(prefix, "#") {
			return nil, false
		}
		prefixes = append(prefixes, prefix)
	}
	out := dst[:0]
	last := 0
	for _, e := range p.edits {
		out = append(out, p.body[last:e.start]...)
		out = append(out, prefixes[e.key]...)
		last = e.cut
	}
	return append(out, p.body[last:]...), true
}

// planner watches a full rewrite and makes its plan, if the playlist has
// one: it is fn's callback, in front of the tokenizer's.
type planner struct {
	tz    *tokenizer
	plan  plan
	ok    bool
	index map[prefixKey]int
}

func newPlanner(tz *tokenizer, body []byte) *planner {
	return &planner{tz: tz, ok: len(body) <= maxPlanBody, plan: plan{aux: tz.aux, video: tz.video}}
}

func (pl *planner) edit(ref manifest.Ref) (manifest.Edit, bool) {
	e, ok := pl.tz.edit(ref)
	if !pl.ok {
		return e, ok
	}
	i, plain := plainIndex(ref)
	if !ok || !plain || e.From != i {
		pl.ok = false // a URI of its own: no plan
		return e, ok
	}
	key := prefixKey{ref.URI[:i], pl.tz.extra(ref)}
	k, seen := pl.index[key]
	if !seen {
		if pl.index == nil {
			pl.index = map[prefixKey]int{}
		}
		k = len(pl.plan.keys)
		pl.index[key] = k
		// Kept beyond this request: not parts of the whole body's text.
		key.dir, key.extra = strings.Clone(key.dir), strings.Clone(key.extra)
		pl.plan.keys = append(pl.plan.keys, planKey{key, manifest.Ref{Role: ref.Role, Duration: ref.Duration, Track: ref.Track}})
	}
	pl.plan.edits = append(pl.plan.edits, planEdit{start: ref.Start, cut: ref.Start + i, key: k})
	return e, ok
}

// done keeps the plan of a playlist rewritten without error.
func (pl *planner) done(body []byte) {
	if !pl.ok || len(pl.plan.edits) == 0 {
		return
	}
	pl.plan.body = bytes.Clone(body)
	plans.add(&pl.plan)
}
