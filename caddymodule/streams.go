package caddymodule

import (
	"hash/maphash"
	"sync"
)

// streamTable holds a zone's streams known in this process, split over
// shards that each have their own lock: the idle sweep, walking them all,
// holds up one shard's requests at a time rather than the zone's (a walk
// of a million streams takes a tenth of a second or more), and requests of
// different streams on many cores do not queue on one lock.
type streamTable struct {
	seed   maphash.Seed
	shards [streamShards]streamShard
}

// streamShards is how many shards a zone's streams are split over: at a
// million streams, about 4,000 in each.
const streamShards = 256

type streamShard struct {
	mu sync.Mutex
	m  map[streamRef]*localStream // made by the first stream put in
}

func newStreamTable() *streamTable { return &streamTable{seed: maphash.MakeSeed()} }

// shard is the shard that holds ref, if anything does.
func (t *streamTable) shard(ref streamRef) *streamShard {
	return &t.shards[maphash.String(t.seed, ref.id)%streamShards]
}

// put adds ls as ref's state; s.mu is held.
func (s *streamShard) put(ref streamRef, ls *localStream) {
	if s.m == nil {
		s.m = make(map[streamRef]*localStream)
	}
	s.m[ref] = ls
}

// each calls f with each shard, locked.
func (t *streamTable) each(f func(s *streamShard)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		f(s)
		s.mu.Unlock()
	}
}

// len is how many streams are known here.
func (t *streamTable) len() int {
	n := 0
	t.each(func(s *streamShard) { n += len(s.m) })
	return n
}
