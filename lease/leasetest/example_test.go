package leasetest_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/streamlimit/caddy-streamlimit/lease"
	"github.com/streamlimit/caddy-streamlimit/lease/leasetest"
)

// TestMapStore runs the suite on mapStore as a store's own repository
// would, with the clock the store reads: no case waits.
func TestMapStore(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) (lease.Store, *leasetest.Clock) {
		clock := new(leasetest.Clock)
		return newMapStore(clock.Now), clock
	})
}

// TestMapStoreOnItsOwnClock runs it as a store that keeps its own time:
// the suite then waits for leases to lapse.
func TestMapStoreOnItsOwnClock(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) (lease.Store, *leasetest.Clock) {
		return newMapStore(time.Now), nil
	})
}

// mapStore is about the smallest store that keeps the contract: one lock,
// a few maps, only this process. It uses nothing of package lease but
// its exported names, as a store written in another repository would.
type mapStore struct {
	now    func() time.Time
	mu     sync.Mutex
	users  map[lease.Key]*mapUser
	limits map[lease.Key]int // per-user overrides: operator data, never pruned
	secret []byte
}

type mapUser struct {
	leases map[string]lease.Lease
	tombs  map[string]time.Time // revoked id -> when it lapses
}

func newMapStore(now func() time.Time) *mapStore {
	return &mapStore{now: now, users: map[lease.Key]*mapUser{}, limits: map[lease.Key]int{}}
}

// user returns key's leases and tombstones with the lapsed ones dropped.
func (s *mapStore) user(key lease.Key, now time.Time) *mapUser {
	u := s.users[key]
	if u == nil {
		u = &mapUser{leases: map[string]lease.Lease{}, tombs: map[string]time.Time{}}
		s.users[key] = u
	}
	for id, l := range u.leases {
		if !l.Expires.After(now) {
			delete(u.leases, id)
		}
	}
	for id, until := range u.tombs {
		if !until.After(now) {
			delete(u.tombs, id)
		}
	}
	return u
}

// byStart lists the live leases, the first started first.
func (u *mapUser) byStart() []lease.Lease {
	out := make([]lease.Lease, 0, len(u.leases))
	for _, l := range u.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b lease.Lease) int {
		return cmp.Or(a.Started.Compare(b.Started), a.Expires.Compare(b.Expires))
	})
	return out
}

func (u *mapUser) revoke(id string, until time.Time) {
	delete(u.leases, id)
	u.tombs[id] = until
	for len(u.tombs) > lease.MaxTombstones {
		// The tombstone that lapses first goes first.
		first := ""
		for id, t := range u.tombs {
			if first == "" || t.Before(u.tombs[first]) || t.Equal(u.tombs[first]) && id < first {
				first = id
			}
		}
		delete(u.tombs, first)
	}
}

func checkKey(key lease.Key) error {
	if key.User == "" || len(key.User) > lease.MaxUserLen {
		return fmt.Errorf("%w: user must be 1 to %d bytes", lease.ErrBadRequest, lease.MaxUserLen)
	}
	return nil
}

func checkLease(key lease.Key, id string, ttl time.Duration) error {
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return fmt.Errorf("%w: %q is not a canonical UUID", lease.ErrBadRequest, id)
	}
	if ttl <= 0 || ttl > lease.MaxTTL {
		return fmt.Errorf("%w: TTL %v", lease.ErrBadRequest, ttl)
	}
	return checkKey(key)
}

func (s *mapStore) Acquire(_ context.Context, req lease.AcquireRequest) (lease.Decision, error) {
	if err := checkLease(req.Key, req.ID, req.TTL); err != nil {
		return lease.Decision{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	u := s.user(req.Key, now)
	if _, revoked := u.tombs[req.ID]; revoked {
		return lease.Decision{}, lease.ErrRevoked
	}
	limit, ok := s.limits[req.Key]
	if !ok {
		limit = max(req.Limit, 0)
	}
	d := lease.Decision{Limit: limit}
	if l, live := u.leases[req.ID]; live {
		if e := now.Add(req.TTL); e.After(l.Expires) {
			l.Expires = e
		}
		u.leases[req.ID] = l
		d.Admitted, d.Lease, d.Active = true, l, len(u.leases)
		return d, nil
	}
	live := u.byStart()
	for req.Policy == lease.EvictOldest && limit > 0 && len(live) >= limit {
		u.revoke(live[0].ID, now.Add(lease.TombstoneTTL(req.TTL)))
		d.Evicted = append(d.Evicted, live[0].ID)
		live = live[1:]
	}
	if len(live) >= limit {
		// Refused: nothing taken, nothing extended.
		d.Active, d.RetryAfter = len(live), req.TTL
		d.Held = live[:min(len(live), lease.MaxHeldReported)] // byStart: earliest first
		if len(live) > 0 {
			d.RetryAfter = slices.MinFunc(live, func(a, b lease.Lease) int { return a.Expires.Compare(b.Expires) }).Expires.Sub(now)
		}
		return d, nil
	}
	l := lease.Lease{ID: req.ID, Started: now, Expires: now.Add(req.TTL)}
	u.leases[req.ID] = l
	d.Admitted, d.Lease, d.Active = true, l, len(u.leases)
	return d, nil
}

func (s *mapStore) Renew(_ context.Context, key lease.Key, id string, ttl time.Duration) (lease.Lease, error) {
	if err := checkLease(key, id, ttl); err != nil {
		return lease.Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	u := s.user(key, now)
	if _, revoked := u.tombs[id]; revoked {
		return lease.Lease{}, lease.ErrRevoked
	}
	l, live := u.leases[id]
	if !live {
		return lease.Lease{}, lease.ErrNotFound
	}
	if e := now.Add(ttl); e.After(l.Expires) {
		l.Expires = e
	}
	u.leases[id] = l
	return l, nil
}

func (s *mapStore) Release(ctx context.Context, key lease.Key, id string) error {
	return s.remove(key, id, 0)
}

func (s *mapStore) Revoke(_ context.Context, key lease.Key, id string, tombstoneTTL time.Duration) error {
	if tombstoneTTL <= 0 || tombstoneTTL > lease.TombstoneTTL(lease.MaxTTL) {
		return fmt.Errorf("%w: tombstone TTL %v", lease.ErrBadRequest, tombstoneTTL)
	}
	return s.remove(key, id, tombstoneTTL)
}

func (s *mapStore) remove(key lease.Key, id string, tombstoneTTL time.Duration) error {
	if err := checkLease(key, id, time.Second); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	u := s.user(key, now)
	if _, live := u.leases[id]; !live {
		return lease.ErrNotFound
	}
	if tombstoneTTL > 0 {
		u.revoke(id, now.Add(tombstoneTTL))
	} else {
		delete(u.leases, id)
	}
	return nil
}

func (s *mapStore) List(_ context.Context, key lease.Key) ([]lease.Lease, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user(key, s.now()).byStart(), nil
}

func (s *mapStore) SetOverride(_ context.Context, key lease.Key, limit int) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if limit < 0 {
		return fmt.Errorf("%w: negative limit", lease.ErrBadRequest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits[key] = limit
	return nil
}

func (s *mapStore) ClearOverride(_ context.Context, key lease.Key) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.limits[key]
	delete(s.limits, key)
	return ok, nil
}

func (s *mapStore) Override(_ context.Context, key lease.Key) (int, bool, error) {
	if err := checkKey(key); err != nil {
		return 0, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	limit, ok := s.limits[key]
	return limit, ok, nil
}

func (s *mapStore) Totals(_ context.Context, zone string) (lease.Totals, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var t lease.Totals
	for key := range s.users {
		if n := len(s.user(key, now).leases); key.Zone == zone && n > 0 {
			t.Users++
			t.Streams += n
		}
	}
	return t, nil
}

func (s *mapStore) SharedSecret(_ context.Context, proposal []byte) ([]byte, error) {
	if len(proposal) == 0 {
		return nil, fmt.Errorf("%w: empty secret", lease.ErrBadRequest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.secret == nil {
		s.secret = slices.Clone(proposal)
	}
	return s.secret, nil
}

func (s *mapStore) Close() error { return nil }

var _ lease.Store = (*mapStore)(nil)
