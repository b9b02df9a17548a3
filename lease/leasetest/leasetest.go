// Package leasetest is the lease.Store contract as a test suite: one call,
// Run, checks a store against every rule the limiter relies on. The memory
// and Redis stores of this repository pass it unchanged; a store written
// elsewhere proves itself the same way (see docs/STORES.md).
package leasetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// Clock is a clock the suite moves by hand: a store that takes its time
// from Clock.Now (as lease.MemoryOptions.Clock does) sees leases lapse at
// once when the suite calls Advance. It runs on from the real time plus
// what was advanced, so calls still take time. The zero value is ready.
type Clock struct{ offset atomic.Int64 }

// Now is the clock's time: a lease.Clock.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// Opener opens a fresh, empty store for one case of the suite. It returns
// the Clock the store reads, or nil for a store that keeps its own time (as
// Redis does): the suite then waits for real, on leases of ShortTTL.
type Opener func(t *testing.T) (lease.Store, *Clock)

// ShortTTL is the lease of the cases that wait for one to lapse. A store
// with its own clock must keep time to the millisecond.
const ShortTTL = 2 * time.Second

// ttl is the lease of the cases that must not see one lapse.
const ttl = 30 * time.Second

// Run checks the store contract on stores from open, one fresh store per
// case, closed when the case ends. The cases run at the same time, so that
// their waits on a store's own clock overlap (a few seconds in all); Run
// calls open from one case at a time, and returns when every case has.
func Run(t *testing.T, open Opener) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(c.name, func(t *testing.T) {
				s, clock := func() (lease.Store, *Clock) {
					mu.Lock()
					defer mu.Unlock()
					return open(t)
				}()
				t.Cleanup(func() { s.Close() })
				c.test(t, &subject{Store: s, clock: clock})
			})
		}()
	}
	wg.Wait()
}

// subject is the store one case runs on.
type subject struct {
	lease.Store
	clock *Clock
}

// wait lets d pass for the store: on its Clock, or for real.
func (s *subject) wait(d time.Duration) {
	if s.clock != nil {
		s.clock.Advance(d)
		return
	}
	time.Sleep(d)
}

// lapse waits until a lease of ShortTTL taken before the call has lapsed.
func (s *subject) lapse() { s.wait(ShortTTL + time.Millisecond) }

// step is a pause that gives the next call a later time than the last, on
// a clock that resolves milliseconds.
const step = 10 * time.Millisecond

var ctx = context.Background()

// k is the key most cases use.
var k = lease.Key{Zone: "z", User: "u"}

// id names a stream by a word; stores take canonical UUIDs.
func id(name string) string { return uuid.NewSHA1(uuid.Nil, []byte(name)).String() }

func (s *subject) acquire(t *testing.T, key lease.Key, id string, limit int, policy lease.Policy, ttl time.Duration) lease.Decision {
	t.Helper()
	d, err := s.Acquire(ctx, lease.AcquireRequest{Key: key, ID: id, Limit: limit, TTL: ttl, Policy: policy})
	if err != nil {
		t.Fatalf("acquire %s/%s: %v", key.User, id, err)
	}
	return d
}

// fill starts n streams for user, with a limit of n.
func (s *subject) fill(t *testing.T, user string, n int, ttl time.Duration) {
	t.Helper()
	for i := range n {
		if d := s.acquire(t, lease.Key{Zone: "z", User: user}, id(fmt.Sprintf("s%d", i)), n, lease.Deny, ttl); !d.Admitted {
			t.Fatalf("start %d of %d refused: %+v", i+1, n, d)
		}
	}
}

var cases = []struct {
	name string
	test func(t *testing.T, s *subject)
}{
	{"admits up to the limit then refuses without taking anything", func(t *testing.T, s *subject) {
		s.fill(t, "u", 3, ttl)
		before, _ := s.List(ctx, k)
		s.wait(step)
		for range 5 {
			d := s.acquire(t, k, id("s-new"), 3, lease.Deny, ttl)
			if d.Admitted || d.Active != 3 || d.Limit != 3 {
				t.Fatalf("fourth start: %+v, want refused with active=3 limit=3", d)
			}
			if d.RetryAfter <= 0 || d.RetryAfter > ttl {
				t.Fatalf("RetryAfter = %v, want within (0, %v]", d.RetryAfter, ttl)
			}
		}
		after, _ := s.List(ctx, k)
		if len(after) != 3 || !after[0].Expires.Equal(before[0].Expires) {
			t.Fatalf("refused starts changed the leases: %v -> %v", before, after)
		}
	}},

	{"a refusal names the leases that hold the slots, earliest first", func(t *testing.T, s *subject) {
		for _, name := range []string{"c", "a", "b"} {
			s.acquire(t, k, id(name), 3, lease.Deny, ttl)
			s.wait(step)
		}
		d := s.acquire(t, k, id("d"), 3, lease.Deny, ttl)
		if d.Admitted || len(d.Held) != 3 || d.Held[0].ID != id("c") || d.Held[1].ID != id("a") || d.Held[2].ID != id("b") {
			t.Fatalf("refusal: %+v, want the three leases held, c a b", d)
		}
		listed, _ := s.List(ctx, k)
		for i, h := range d.Held {
			if h.Started.Sub(listed[i].Started).Abs() > time.Millisecond || h.Expires.Sub(listed[i].Expires).Abs() > time.Millisecond {
				t.Fatalf("held %v, listed %v", h, listed[i])
			}
		}
		// At most MaxHeldReported, whatever the limit.
		many := lease.Key{Zone: "z", User: "many"}
		for i := range lease.MaxHeldReported + 4 {
			s.acquire(t, many, id(fmt.Sprintf("m%d", i)), lease.MaxHeldReported+4, lease.Deny, ttl)
		}
		if d := s.acquire(t, many, id("one more"), lease.MaxHeldReported+4, lease.Deny, ttl); d.Admitted || len(d.Held) != lease.MaxHeldReported {
			t.Fatalf("refusal at %d streams reports %d held, want %d", lease.MaxHeldReported+4, len(d.Held), lease.MaxHeldReported)
		}
	}},

	{"re-acquiring a live id takes no new slot and refreshes it", func(t *testing.T, s *subject) {
		first := s.acquire(t, k, id("a"), 1, lease.Deny, ttl)
		s.wait(step)
		again := s.acquire(t, k, id("a"), 1, lease.Deny, ttl)
		if !again.Admitted || again.Active != 1 || !again.Lease.Expires.After(first.Lease.Expires) {
			t.Fatalf("re-acquire: %+v after %+v", again, first)
		}
		if !again.Lease.Started.Equal(first.Lease.Started) {
			t.Fatalf("re-acquire moved the start: %v -> %v", first.Lease.Started, again.Lease.Started)
		}
	}},

	{"release frees the slot at once", func(t *testing.T, s *subject) {
		s.fill(t, "u", 3, ttl)
		if err := s.Release(ctx, k, id("s1")); err != nil {
			t.Fatal(err)
		}
		if d := s.acquire(t, k, id("s-new"), 3, lease.Deny, ttl); !d.Admitted || d.Active != 3 {
			t.Fatalf("after release: %+v", d)
		}
		if err := s.Release(ctx, k, id("s1")); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("second release: %v, want ErrNotFound", err)
		}
		if err := s.Release(ctx, lease.Key{Zone: "z", User: "nobody"}, id("x")); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("release for unknown user: %v, want ErrNotFound", err)
		}
	}},

	{"a lease released whole frees its slot, and only that lease (stores with ReleaseLease)", func(t *testing.T, s *subject) {
		r, ok := s.Store.(lease.LeaseReleaser)
		if !ok {
			t.Skip("the store has no ReleaseLease")
		}
		s.fill(t, "u", 2, ttl)
		held := s.acquire(t, k, id("s-whole"), 3, lease.Deny, ttl)
		other := held.Lease
		other.Started = other.Started.Add(-time.Millisecond) // another start: not this lease
		if err := r.ReleaseLease(ctx, k, other); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("release with another start: %v, want ErrNotFound", err)
		}
		if err := r.ReleaseLease(ctx, k, held.Lease); err != nil {
			t.Fatal(err)
		}
		if err := r.ReleaseLease(ctx, k, held.Lease); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("second release: %v, want ErrNotFound", err)
		}
		if err := s.Release(ctx, k, id("s-whole")); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("release by id after: %v, want ErrNotFound", err)
		}
		if d := s.acquire(t, k, id("s-new"), 3, lease.Deny, ttl); !d.Admitted || d.Active != 3 {
			t.Fatalf("after release: %+v", d)
		}
		if err := r.ReleaseLease(ctx, lease.Key{Zone: "z", User: "nobody"}, held.Lease); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("release for unknown user: %v, want ErrNotFound", err)
		}
	}},

	{"an unrenewed lease lapses and its id is re-admitted", func(t *testing.T, s *subject) {
		s.fill(t, "u", 3, ShortTTL)
		s.lapse()
		if _, err := s.Renew(ctx, k, id("s0"), ttl); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("renew after lapse: %v, want ErrNotFound", err)
		}
		if l, _ := s.List(ctx, k); len(l) != 0 {
			t.Fatalf("lapsed leases still listed: %v", l)
		}
		if d := s.acquire(t, k, id("s0"), 3, lease.Deny, ttl); !d.Admitted || d.Active != 1 {
			t.Fatalf("re-admit lapsed id: %+v", d)
		}
	}},

	{"renew keeps a lease past its first TTL", func(t *testing.T, s *subject) {
		// Renewals every quarter lease, for a lease and a half: a real
		// clock's late wake-up has three quarters of a lease to spare.
		const every = ShortTTL / 4
		prev := s.acquire(t, k, id("a"), 1, lease.Deny, ShortTTL).Lease
		for range 6 {
			s.wait(every)
			l, err := s.Renew(ctx, k, id("a"), ShortTTL)
			if err != nil {
				t.Fatalf("renew: %v", err)
			}
			// At least the wait has passed since the last call, so the
			// expiry moved on by as much (less the milliseconds rounded).
			if moved := l.Expires.Sub(prev.Expires); moved < every-time.Millisecond {
				t.Fatalf("a renewal %v after the last moved the expiry by %v", every, moved)
			}
			prev = l
		}
		if d := s.acquire(t, k, id("b"), 1, lease.Deny, ttl); d.Admitted {
			t.Fatalf("renewed lease lost its slot: %+v", d)
		}
		if _, err := s.Renew(ctx, k, id("never"), ttl); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("renew unknown id: %v, want ErrNotFound", err)
		}
	}},

	{"revoke frees the slot and refuses the id until the tombstone lapses", func(t *testing.T, s *subject) {
		s.fill(t, "u", 3, ShortTTL)
		if err := s.Revoke(ctx, k, id("s0"), ShortTTL); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Renew(ctx, k, id("s0"), ttl); !errors.Is(err, lease.ErrRevoked) {
			t.Fatalf("renew revoked: %v, want ErrRevoked", err)
		}
		if _, err := s.Acquire(ctx, lease.AcquireRequest{Key: k, ID: id("s0"), Limit: 3, TTL: ttl}); !errors.Is(err, lease.ErrRevoked) {
			t.Fatalf("acquire revoked: %v, want ErrRevoked", err)
		}
		if d := s.acquire(t, k, id("s-new"), 3, lease.Deny, ShortTTL); !d.Admitted {
			t.Fatalf("revoke did not free the slot: %+v", d)
		}
		if err := s.Revoke(ctx, k, id("gone"), ShortTTL); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("revoke unknown: %v, want ErrNotFound", err)
		}
		if err := s.Revoke(ctx, k, id("s1"), 0); !errors.Is(err, lease.ErrBadRequest) {
			t.Fatalf("revoke with no tombstone TTL: %v, want ErrBadRequest", err)
		}
		// The tombstone and the leases lapse: the id gets a free slot.
		s.lapse()
		if d := s.acquire(t, k, id("s0"), 3, lease.Deny, ttl); !d.Admitted {
			t.Fatalf("id refused after its tombstone lapsed: %+v", d)
		}
	}},

	{"a user keeps at most MaxTombstones, the latest to lapse", func(t *testing.T, s *subject) {
		const closes = lease.MaxTombstones + 40
		for i := range closes {
			// Each later close lapses later: the first ones are trimmed.
			s.acquire(t, k, id(fmt.Sprintf("c%d", i)), 3, lease.Deny, ttl)
			if err := s.Revoke(ctx, k, id(fmt.Sprintf("c%d", i)), lease.TombstoneTTL(ttl)); err != nil {
				t.Fatal(err)
			}
			s.wait(time.Millisecond)
		}
		for i := range closes {
			_, err := s.Renew(ctx, k, id(fmt.Sprintf("c%d", i)), ttl)
			want := lease.ErrRevoked
			if i < closes-lease.MaxTombstones {
				want = lease.ErrNotFound
			}
			if !errors.Is(err, want) {
				t.Fatalf("close %d of %d: renew %v, want %v", i, closes, err, want)
			}
		}
		// Evictions leave tombstones under the same cap.
		for i := range closes {
			s.acquire(t, k, id(fmt.Sprintf("e%d", i)), 1, lease.EvictOldest, ttl)
			s.wait(time.Millisecond)
		}
		revoked := 0
		for i := range closes {
			if _, err := s.Renew(ctx, k, id(fmt.Sprintf("e%d", i)), ttl); errors.Is(err, lease.ErrRevoked) {
				revoked++
			}
		}
		if revoked != lease.MaxTombstones {
			t.Fatalf("%d evicted ids refused as revoked, want the cap %d", revoked, lease.MaxTombstones)
		}
		// A trimmed id comes back only into a free slot.
		if d := s.acquire(t, k, id("c0"), 1, lease.Deny, ttl); d.Admitted {
			t.Fatalf("a trimmed id was admitted over the limit: %+v", d)
		}
	}},

	{"evict oldest admits the newcomer and revokes the first start", func(t *testing.T, s *subject) {
		for i := range 3 {
			s.acquire(t, k, id(fmt.Sprintf("s%d", i)), 3, lease.EvictOldest, ttl)
			s.wait(step)
		}
		// The oldest start is the most recently renewed: eviction goes by start.
		if _, err := s.Renew(ctx, k, id("s0"), ttl); err != nil {
			t.Fatal(err)
		}
		d := s.acquire(t, k, id("s3"), 3, lease.EvictOldest, ttl)
		if !d.Admitted || d.Active != 3 || len(d.Evicted) != 1 || d.Evicted[0] != id("s0") {
			t.Fatalf("evicting start: %+v, want admitted with s0 evicted", d)
		}
		if _, err := s.Renew(ctx, k, id("s0"), ttl); !errors.Is(err, lease.ErrRevoked) {
			t.Fatalf("evicted stream renew: %v, want ErrRevoked", err)
		}
	}},

	{"limit zero refuses every start, even with evict oldest", func(t *testing.T, s *subject) {
		for _, p := range []lease.Policy{lease.Deny, lease.EvictOldest} {
			if d := s.acquire(t, k, id("a"), 0, p, ttl); d.Admitted || d.RetryAfter <= 0 {
				t.Fatalf("policy %d, limit 0: %+v", p, d)
			}
		}
	}},

	{"users and zones never share a count", func(t *testing.T, s *subject) {
		users := []string{
			"alice", "alice}", "{alice}", "alice:", "a:lice", "alice\n", "alice\x00",
			strings.Repeat("x", lease.MaxUserLen), strings.Repeat("x", lease.MaxUserLen-1) + "y",
			"\xff\xfe", "ü", "{z}:alice", "z:alice",
		}
		for _, zone := range []string{"z", "z2", "z:alice"} {
			for _, u := range users {
				d, err := s.Acquire(ctx, lease.AcquireRequest{Key: lease.Key{Zone: zone, User: u}, ID: id("only"), Limit: 1, TTL: ttl})
				if err != nil || !d.Admitted || d.Active != 1 {
					t.Fatalf("zone %q user %q: %+v %v, want its own first slot", zone, u, d, err)
				}
			}
		}
	}},

	{"a per-user override wins over the caller's limit until cleared", func(t *testing.T, s *subject) {
		if _, ok, err := s.Override(ctx, k); ok || err != nil {
			t.Fatalf("override before any: ok=%v err=%v", ok, err)
		}
		if err := s.SetOverride(ctx, k, 1); err != nil {
			t.Fatal(err)
		}
		s.acquire(t, k, id("a"), 3, lease.Deny, ttl)
		if d := s.acquire(t, k, id("b"), 3, lease.Deny, ttl); d.Admitted || d.Limit != 1 {
			t.Fatalf("override 1: %+v", d)
		}
		if n, ok, _ := s.Override(ctx, k); !ok || n != 1 {
			t.Fatalf("Override = %d %v, want 1 true", n, ok)
		}
		if ok, err := s.ClearOverride(ctx, k); !ok || err != nil {
			t.Fatalf("clear: %v %v", ok, err)
		}
		if d := s.acquire(t, k, id("b"), 3, lease.Deny, ttl); !d.Admitted || d.Limit != 3 {
			t.Fatalf("after clear: %+v", d)
		}
		if ok, _ := s.ClearOverride(ctx, k); ok {
			t.Fatal("second clear reported an override")
		}
	}},

	{"list shows live leases oldest first", func(t *testing.T, s *subject) {
		for _, name := range []string{"c", "a", "b"} {
			s.acquire(t, k, id(name), 3, lease.Deny, ttl)
			s.wait(step)
		}
		l, err := s.List(ctx, k)
		if err != nil || len(l) != 3 || l[0].ID != id("c") || l[1].ID != id("a") || l[2].ID != id("b") {
			t.Fatalf("list: %v %v", l, err)
		}
		for _, x := range l {
			if !x.Expires.After(x.Started) {
				t.Fatalf("lease %v expires before it starts", x)
			}
		}
		if l, err := s.List(ctx, lease.Key{Zone: "z", User: "nobody"}); len(l) != 0 || err != nil {
			t.Fatalf("list unknown user: %v %v", l, err)
		}
	}},

	{"bad requests are refused, not stored", func(t *testing.T, s *subject) {
		long := strings.Repeat("x", lease.MaxUserLen+1)
		for name, req := range map[string]lease.AcquireRequest{
			"empty user":           {Key: lease.Key{Zone: "z", User: ""}, ID: id("a"), Limit: 1, TTL: ttl},
			"long user":            {Key: lease.Key{Zone: "z", User: long}, ID: id("a"), Limit: 1, TTL: ttl},
			"empty id":             {Key: k, ID: "", Limit: 1, TTL: ttl},
			"short id":             {Key: k, ID: "s0", Limit: 1, TTL: ttl},
			"upper id":             {Key: k, ID: strings.ToUpper(id("a")), Limit: 1, TTL: ttl},
			"zero ttl":             {Key: k, ID: id("a"), Limit: 1},
			"ttl past the maximum": {Key: k, ID: id("a"), Limit: 1, TTL: lease.MaxTTL + time.Millisecond},
		} {
			if _, err := s.Acquire(ctx, req); !errors.Is(err, lease.ErrBadRequest) {
				t.Errorf("%s: %v, want ErrBadRequest", name, err)
			}
		}
		if l, err := s.List(ctx, k); len(l) != 0 || err != nil {
			t.Errorf("bad requests left leases: %v %v", l, err)
		}
		if _, err := s.List(ctx, lease.Key{Zone: "z", User: long}); !errors.Is(err, lease.ErrBadRequest) {
			t.Errorf("list long user: %v", err)
		}
		if err := s.SetOverride(ctx, k, -1); !errors.Is(err, lease.ErrBadRequest) {
			t.Errorf("negative override: %v", err)
		}
	}},

	{"totals count a zone's live users and streams", func(t *testing.T, s *subject) {
		s.fill(t, "a", 3, ShortTTL)
		s.fill(t, "b", 2, ShortTTL)
		if _, err := s.Acquire(ctx, lease.AcquireRequest{Key: lease.Key{Zone: "other", User: "c"}, ID: id("x"), Limit: 1, TTL: ShortTTL}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Totals(ctx, "z"); err != nil || got != (lease.Totals{Users: 2, Streams: 5}) {
			t.Fatalf("totals: %+v %v, want 2 users 5 streams", got, err)
		}
		s.lapse()
		if got, err := s.Totals(ctx, "z"); err != nil || got != (lease.Totals{}) {
			t.Fatalf("totals after every lease lapsed: %+v %v", got, err)
		}
	}},

	{"the shared secret is the first one proposed", func(t *testing.T, s *subject) {
		first, err := s.SharedSecret(ctx, []byte("first"))
		if err != nil || string(first) != "first" {
			t.Fatalf("first proposal: %q %v", first, err)
		}
		if again, err := s.SharedSecret(ctx, []byte("second")); err != nil || string(again) != "first" {
			t.Fatalf("second proposal: %q %v, want the first kept", again, err)
		}
		if _, err := s.SharedSecret(ctx, nil); !errors.Is(err, lease.ErrBadRequest) {
			t.Fatalf("empty proposal: %v", err)
		}
	}},

	{"concurrent starts admit exactly the limit", func(t *testing.T, s *subject) {
		for round := range 5 {
			key := lease.Key{Zone: "z", User: fmt.Sprintf("u%d", round)}
			var admitted atomic.Int32
			var wg sync.WaitGroup
			for i := range 200 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := s.Acquire(ctx, lease.AcquireRequest{Key: key, ID: id(fmt.Sprint(i)), Limit: 3, TTL: ttl})
					if err != nil {
						t.Error(err)
					}
					if d.Admitted {
						admitted.Add(1)
					}
				}()
			}
			wg.Wait()
			if n := admitted.Load(); n != 3 {
				t.Fatalf("round %d: %d of 200 concurrent starts admitted, want 3", round, n)
			}
		}
	}},
}
