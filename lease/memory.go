package lease

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// memoryShards spreads users over independent locks so that unrelated users
// never wait on each other.
const memoryShards = 64

// MemoryStore keeps leases in this process. It is the default store: exact,
// with no network hop, but shared by nothing outside the process.
type MemoryStore struct {
	clock  Clock
	seed   maphash.Seed
	shards [memoryShards]memoryShard
	// onExpire, when set, hears of each lease that lapsed unrenewed.
	onExpire func(Key, Lease)

	secretMu sync.Mutex
	secret   []byte

	stop     chan struct{}
	stopOnce sync.Once
}

type memoryShard struct {
	mu    sync.Mutex
	users map[Key]*memoryUser
}

// memoryUser holds one user's leases. A user holds a handful of leases, so
// a slice scanned in full beats any map.
type memoryUser struct {
	leases      []memoryLease
	tombstones  map[string]int64 // revoked id -> unix nanos it lapses at
	override    int
	hasOverride bool
}

type memoryLease struct {
	id      string
	started int64 // unix nanos
	expires int64 // unix nanos
}

func (l memoryLease) public() Lease {
	return Lease{ID: l.id, Started: time.Unix(0, l.started), Expires: time.Unix(0, l.expires)}
}

// MemoryOptions tunes a MemoryStore; the zero value is ready to use.
type MemoryOptions struct {
	// Clock is the store's time source; default time.Now.
	Clock Clock
	// SweepInterval is how often lapsed leases of idle users are dropped;
	// default 10s, negative disables the sweeper (tests call Sweep).
	SweepInterval time.Duration
	// OnExpire hears of each lease that lapsed without release. It runs
	// under the store's lock and must not call the store.
	OnExpire func(Key, Lease)
}

// NewMemoryStore returns a store that lives in this process until Close.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	s := &MemoryStore{clock: opts.Clock, seed: maphash.MakeSeed(), onExpire: opts.OnExpire, stop: make(chan struct{})}
	if s.clock == nil {
		s.clock = time.Now
	}
	for i := range s.shards {
		s.shards[i].users = make(map[Key]*memoryUser)
	}
	interval := opts.SweepInterval
	if interval == 0 {
		interval = 10 * time.Second
	}
	if interval > 0 {
		go s.sweepEvery(interval)
	}
	return s
}

func (s *MemoryStore) shard(key Key) *memoryShard {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(key.Zone)
	h.WriteByte(0)
	h.WriteString(key.User)
	return &s.shards[h.Sum64()%memoryShards]
}

// user returns the user's state with lapsed leases and tombstones pruned,
// creating it when create is set. The shard lock must be held.
func (s *MemoryStore) user(sh *memoryShard, key Key, now int64, create bool) *memoryUser {
	u := sh.users[key]
	if u == nil {
		if create {
			u = &memoryUser{}
			sh.users[key] = u
		}
		return u
	}
	s.prune(key, u, now)
	return u
}

func (s *MemoryStore) prune(key Key, u *memoryUser, now int64) {
	u.leases = slices.DeleteFunc(u.leases, func(l memoryLease) bool {
		if l.expires > now {
			return false
		}
		if s.onExpire != nil {
			s.onExpire(key, l.public())
		}
		return true
	})
	for id, until := range u.tombstones {
		if until <= now {
			delete(u.tombstones, id)
		}
	}
}

// forget drops a user that holds nothing worth keeping.
func forget(sh *memoryShard, key Key, u *memoryUser) {
	if len(u.leases) == 0 && len(u.tombstones) == 0 && !u.hasOverride {
		delete(sh.users, key)
	}
}

func (u *memoryUser) find(id string) int {
	for i := range u.leases {
		if u.leases[i].id == id {
			return i
		}
	}
	return -1
}

// Acquire implements Store.
func (s *MemoryStore) Acquire(ctx context.Context, req AcquireRequest) (Decision, error) {
	if err := validateLease(req.Key, req.ID, req.TTL); err != nil {
		return Decision{}, err
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	now := s.clock().UnixNano()
	expires := now + int64(req.TTL)
	sh := s.shard(req.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := s.user(sh, req.Key, now, true)
	defer forget(sh, req.Key, u)

	if _, revoked := u.tombstones[req.ID]; revoked {
		return Decision{}, ErrRevoked
	}
	limit := max(req.Limit, 0)
	if u.hasOverride {
		limit = u.override
	}
	d := Decision{Limit: limit}
	if i := u.find(req.ID); i >= 0 {
		u.leases[i].expires = max(u.leases[i].expires, expires)
		d.Admitted, d.Lease, d.Active = true, u.leases[i].public(), len(u.leases)
		return d, nil
	}
	if len(u.leases) >= limit && req.Policy == EvictOldest && limit > 0 {
		for len(u.leases) >= limit {
			oldest := slices.MinFunc(u.leases, func(a, b memoryLease) int {
				if a.started != b.started {
					return cmp.Compare(a.started, b.started)
				}
				return cmp.Compare(a.expires, b.expires)
			})
			s.revokeLocked(u, u.find(oldest.id), now+int64(TombstoneTTL(req.TTL)))
			d.Evicted = append(d.Evicted, oldest.id)
		}
	}
	if len(u.leases) >= limit {
		d.Active = len(u.leases)
		held := slices.Clone(u.leases)
		slices.SortStableFunc(held, func(a, b memoryLease) int { return cmp.Compare(a.started, b.started) })
		for _, l := range held[:min(len(held), MaxHeldReported)] {
			d.Held = append(d.Held, l.public())
		}
		if len(u.leases) > 0 {
			earliest := slices.MinFunc(u.leases, func(a, b memoryLease) int { return cmp.Compare(a.expires, b.expires) })
			d.RetryAfter = time.Duration(earliest.expires - now)
		} else {
			// limit 0: no lease will ever free a slot; say "one lease from now".
			d.RetryAfter = req.TTL
		}
		return d, nil
	}
	l := memoryLease{id: req.ID, started: now, expires: expires}
	u.leases = append(u.leases, l)
	d.Admitted, d.Lease, d.Active = true, l.public(), len(u.leases)
	return d, nil
}

func (s *MemoryStore) revokeLocked(u *memoryUser, i int, until int64) {
	if u.tombstones == nil {
		u.tombstones = make(map[string]int64)
	}
	u.tombstones[u.leases[i].id] = until
	u.leases = slices.Delete(u.leases, i, i+1)
	for len(u.tombstones) > MaxTombstones {
		// Trim the one that lapses first, as the Redis store does.
		first, firstUntil := "", int64(0)
		for id, t := range u.tombstones {
			if first == "" || t < firstUntil || t == firstUntil && id < first {
				first, firstUntil = id, t
			}
		}
		delete(u.tombstones, first)
	}
}

// Renew implements Store.
func (s *MemoryStore) Renew(ctx context.Context, key Key, id string, ttl time.Duration) (Lease, error) {
	if err := validateLease(key, id, ttl); err != nil {
		return Lease{}, err
	}
	if err := ctx.Err(); err != nil {
		return Lease{}, err
	}
	now := s.clock().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := s.user(sh, key, now, false)
	if u == nil {
		return Lease{}, ErrNotFound
	}
	defer forget(sh, key, u)
	if _, revoked := u.tombstones[id]; revoked {
		return Lease{}, ErrRevoked
	}
	i := u.find(id)
	if i < 0 {
		return Lease{}, ErrNotFound
	}
	u.leases[i].expires = max(u.leases[i].expires, now+int64(ttl))
	return u.leases[i].public(), nil
}

// Release implements Store.
func (s *MemoryStore) Release(ctx context.Context, key Key, id string) error {
	return s.remove(ctx, key, id, 0)
}

// Revoke implements Store.
func (s *MemoryStore) Revoke(ctx context.Context, key Key, id string, tombstoneTTL time.Duration) error {
	if err := validateTombstoneTTL(tombstoneTTL); err != nil {
		return err
	}
	return s.remove(ctx, key, id, tombstoneTTL)
}

func (s *MemoryStore) remove(ctx context.Context, key Key, id string, tombstoneTTL time.Duration) error {
	if err := validateLease(key, id, time.Second); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := s.user(sh, key, now, false)
	if u == nil {
		return ErrNotFound
	}
	defer forget(sh, key, u)
	i := u.find(id)
	if i < 0 {
		return ErrNotFound
	}
	if tombstoneTTL > 0 {
		s.revokeLocked(u, i, now+int64(tombstoneTTL))
	} else {
		u.leases = slices.Delete(u.leases, i, i+1)
	}
	return nil
}

// List implements Store.
func (s *MemoryStore) List(ctx context.Context, key Key) ([]Lease, error) {
	if err := validateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.clock().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := s.user(sh, key, now, false)
	if u == nil {
		return nil, nil
	}
	defer forget(sh, key, u)
	out := make([]Lease, len(u.leases))
	for i, l := range u.leases {
		out[i] = l.public()
	}
	sortByStart(out)
	return out, nil
}

// SetOverride implements Store.
func (s *MemoryStore) SetOverride(ctx context.Context, key Key, limit int) error {
	if err := validateKey(key); err != nil {
		return err
	}
	if limit < 0 {
		return ErrBadRequest
	}
	return s.withUser(ctx, key, true, func(u *memoryUser) {
		u.override, u.hasOverride = limit, true
	})
}

// ClearOverride implements Store.
func (s *MemoryStore) ClearOverride(ctx context.Context, key Key) (bool, error) {
	var had bool
	err := s.withUser(ctx, key, false, func(u *memoryUser) {
		had = u.hasOverride
		u.override, u.hasOverride = 0, false
	})
	return had, err
}

// Override implements Store.
func (s *MemoryStore) Override(ctx context.Context, key Key) (int, bool, error) {
	var limit int
	var ok bool
	err := s.withUser(ctx, key, false, func(u *memoryUser) { limit, ok = u.override, u.hasOverride })
	return limit, ok, err
}

func (s *MemoryStore) withUser(ctx context.Context, key Key, create bool, fn func(*memoryUser)) error {
	if err := validateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if u := s.user(sh, key, now, create); u != nil {
		fn(u)
		forget(sh, key, u)
	}
	return nil
}

// Totals implements Store.
func (s *MemoryStore) Totals(ctx context.Context, zone string) (Totals, error) {
	var t Totals
	now := s.clock().UnixNano()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for key, u := range sh.users {
			if key.Zone != zone {
				continue
			}
			live := 0
			for _, l := range u.leases {
				if l.expires > now {
					live++
				}
			}
			if live > 0 {
				t.Users++
				t.Streams += live
			}
		}
		sh.mu.Unlock()
	}
	return t, ctx.Err()
}

// SharedSecret implements Store.
func (s *MemoryStore) SharedSecret(ctx context.Context, proposal []byte) ([]byte, error) {
	if len(proposal) == 0 {
		return nil, fmt.Errorf("%w: empty secret", ErrBadRequest)
	}
	s.secretMu.Lock()
	defer s.secretMu.Unlock()
	if s.secret == nil {
		s.secret = slices.Clone(proposal)
	}
	return s.secret, ctx.Err()
}

// Sweep drops every lapsed lease and tombstone, and users left empty. The
// sweeper calls it; tests that drive the clock call it directly.
func (s *MemoryStore) Sweep() {
	now := s.clock().UnixNano()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for key, u := range sh.users {
			s.prune(key, u, now)
			forget(sh, key, u)
		}
		sh.mu.Unlock()
	}
}

func (s *MemoryStore) sweepEvery(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Close stops the sweeper; the leases go with the store.
func (s *MemoryStore) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	return nil
}

var _ Store = (*MemoryStore)(nil)
