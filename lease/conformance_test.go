package lease

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
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
func (c *fakeClock) Offset() time.Duration   { return time.Duration(c.offset.Load()) }

// storeFactory opens a fresh, empty store whose time runs on clock.
type storeFactory func(t *testing.T, clock *fakeClock) Store

const ttl = 30 * time.Second

// id names a stream in a test by a word; stores take canonical UUIDs.
func id(name string) string { return uuid.NewSHA1(uuid.Nil, []byte(name)).String() }

// testConformance runs the store contract against one store. Every store
// must pass it unchanged: a difference is a bug in that store.
func testConformance(t *testing.T, open storeFactory) {
	ctx := context.Background()
	newStore := func(t *testing.T) (Store, *fakeClock) {
		clock := &fakeClock{}
		s := open(t, clock)
		t.Cleanup(func() { s.Close() })
		return s, clock
	}
	acquire := func(t *testing.T, s Store, user, id string, limit int, policy Policy) Decision {
		t.Helper()
		d, err := s.Acquire(ctx, AcquireRequest{Key: Key{"z", user}, ID: id, Limit: limit, TTL: ttl, Policy: policy})
		if err != nil {
			t.Fatalf("acquire %s/%s: %v", user, id, err)
		}
		return d
	}
	fill := func(t *testing.T, s Store, user string, n int) {
		t.Helper()
		for i := range n {
			if d := acquire(t, s, user, id(fmt.Sprintf("s%d", i)), n, Deny); !d.Admitted {
				t.Fatalf("start %d of %d refused: %+v", i+1, n, d)
			}
		}
	}

	t.Run("admits up to the limit then refuses without taking anything", func(t *testing.T) {
		s, clock := newStore(t)
		fill(t, s, "u", 3)
		before, _ := s.List(ctx, Key{"z", "u"})
		clock.Advance(time.Second)
		for range 5 {
			d := acquire(t, s, "u", id("s-new"), 3, Deny)
			if d.Admitted || d.Active != 3 || d.Limit != 3 {
				t.Fatalf("fourth start: %+v, want refused with active=3 limit=3", d)
			}
			if d.RetryAfter <= 0 || d.RetryAfter > ttl {
				t.Fatalf("RetryAfter = %v, want within (0, %v]", d.RetryAfter, ttl)
			}
		}
		after, _ := s.List(ctx, Key{"z", "u"})
		if len(after) != 3 || !after[0].Expires.Equal(before[0].Expires) {
			t.Fatalf("refused starts changed the leases: %v -> %v", before, after)
		}
	})

	t.Run("re-acquiring a live id takes no new slot and refreshes it", func(t *testing.T) {
		s, clock := newStore(t)
		first := acquire(t, s, "u", id("a"), 1, Deny)
		clock.Advance(ttl / 2)
		again := acquire(t, s, "u", id("a"), 1, Deny)
		if !again.Admitted || again.Active != 1 || !again.Lease.Expires.After(first.Lease.Expires) {
			t.Fatalf("re-acquire: %+v after %+v", again, first)
		}
		if !again.Lease.Started.Equal(first.Lease.Started) {
			t.Fatalf("re-acquire moved the start: %v -> %v", first.Lease.Started, again.Lease.Started)
		}
	})

	t.Run("release frees the slot at once", func(t *testing.T) {
		s, _ := newStore(t)
		fill(t, s, "u", 3)
		if err := s.Release(ctx, Key{"z", "u"}, id("s1")); err != nil {
			t.Fatal(err)
		}
		if d := acquire(t, s, "u", id("s-new"), 3, Deny); !d.Admitted || d.Active != 3 {
			t.Fatalf("after release: %+v", d)
		}
		if err := s.Release(ctx, Key{"z", "u"}, id("s1")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second release: %v, want ErrNotFound", err)
		}
		if err := s.Release(ctx, Key{"z", "nobody"}, id("x")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("release for unknown user: %v, want ErrNotFound", err)
		}
	})

	t.Run("an unrenewed lease lapses and its id is re-admitted", func(t *testing.T) {
		s, clock := newStore(t)
		fill(t, s, "u", 3)
		clock.Advance(ttl + time.Millisecond)
		if _, err := s.Renew(ctx, Key{"z", "u"}, id("s0"), ttl); !errors.Is(err, ErrNotFound) {
			t.Fatalf("renew after lapse: %v, want ErrNotFound", err)
		}
		if l, _ := s.List(ctx, Key{"z", "u"}); len(l) != 0 {
			t.Fatalf("lapsed leases still listed: %v", l)
		}
		if d := acquire(t, s, "u", id("s0"), 3, Deny); !d.Admitted || d.Active != 1 {
			t.Fatalf("re-admit lapsed id: %+v", d)
		}
	})

	t.Run("renew keeps a lease past its first TTL", func(t *testing.T) {
		s, clock := newStore(t)
		acquire(t, s, "u", id("a"), 1, Deny)
		for range 4 {
			clock.Advance(ttl * 2 / 3)
			l, err := s.Renew(ctx, Key{"z", "u"}, id("a"), ttl)
			if err != nil {
				t.Fatalf("renew: %v", err)
			}
			if got := l.Expires.Sub(clock.Now()); got < ttl-time.Second {
				t.Fatalf("renewed lease expires in %v, want about %v", got, ttl)
			}
		}
		if d := acquire(t, s, "u", id("b"), 1, Deny); d.Admitted {
			t.Fatalf("renewed lease lost its slot: %+v", d)
		}
		if _, err := s.Renew(ctx, Key{"z", "u"}, id("never"), ttl); !errors.Is(err, ErrNotFound) {
			t.Fatalf("renew unknown id: %v, want ErrNotFound", err)
		}
	})

	t.Run("revoke frees the slot and refuses the id until the tombstone lapses", func(t *testing.T) {
		s, clock := newStore(t)
		fill(t, s, "u", 3)
		k := Key{"z", "u"}
		if err := s.Revoke(ctx, k, id("s0"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Renew(ctx, k, id("s0"), ttl); !errors.Is(err, ErrRevoked) {
			t.Fatalf("renew revoked: %v, want ErrRevoked", err)
		}
		if _, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id("s0"), Limit: 3, TTL: ttl}); !errors.Is(err, ErrRevoked) {
			t.Fatalf("acquire revoked: %v, want ErrRevoked", err)
		}
		if d := acquire(t, s, "u", id("s-new"), 3, Deny); !d.Admitted {
			t.Fatalf("revoke did not free the slot: %+v", d)
		}
		if err := s.Revoke(ctx, k, id("gone"), time.Minute); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoke unknown: %v, want ErrNotFound", err)
		}
		clock.Advance(time.Minute + time.Millisecond)
		if d := acquire(t, s, "u", id("s0"), 3, Deny); !d.Admitted {
			t.Fatalf("id refused after its tombstone lapsed: %+v", d)
		}
	})

	t.Run("a user keeps at most MaxTombstones, the latest to lapse", func(t *testing.T) {
		s, clock := newStore(t)
		k := Key{"z", "u"}
		const closes = MaxTombstones + 40
		for i := range closes {
			// Each later close lapses later: the first ones are trimmed.
			acquire(t, s, "u", id(fmt.Sprintf("c%d", i)), 3, Deny)
			if err := s.Revoke(ctx, k, id(fmt.Sprintf("c%d", i)), TombstoneTTL(ttl)); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Millisecond)
		}
		for i := range closes {
			_, err := s.Renew(ctx, k, id(fmt.Sprintf("c%d", i)), ttl)
			want := ErrRevoked
			if i < closes-MaxTombstones {
				want = ErrNotFound
			}
			if !errors.Is(err, want) {
				t.Fatalf("close %d of %d: renew %v, want %v", i, closes, err, want)
			}
		}
		// Evictions leave tombstones under the same cap.
		for i := range closes {
			acquire(t, s, "u", id(fmt.Sprintf("e%d", i)), 1, EvictOldest)
			clock.Advance(time.Millisecond)
		}
		revoked := 0
		for i := range closes {
			if _, err := s.Renew(ctx, k, id(fmt.Sprintf("e%d", i)), ttl); errors.Is(err, ErrRevoked) {
				revoked++
			}
		}
		if revoked != MaxTombstones {
			t.Fatalf("%d evicted ids refused as revoked, want the cap %d", revoked, MaxTombstones)
		}
		// A trimmed id comes back only into a free slot.
		if d := acquire(t, s, "u", id("c0"), 1, Deny); d.Admitted {
			t.Fatalf("a trimmed id was admitted over the limit: %+v", d)
		}
	})

	t.Run("evict oldest admits the newcomer and revokes the first start", func(t *testing.T) {
		s, clock := newStore(t)
		for i := range 3 {
			acquire(t, s, "u", id(fmt.Sprintf("s%d", i)), 3, EvictOldest)
			clock.Advance(time.Second)
		}
		// The oldest start is the most recently renewed: eviction goes by start.
		if _, err := s.Renew(ctx, Key{"z", "u"}, id("s0"), ttl); err != nil {
			t.Fatal(err)
		}
		d := acquire(t, s, "u", id("s3"), 3, EvictOldest)
		if !d.Admitted || d.Active != 3 || len(d.Evicted) != 1 || d.Evicted[0] != id("s0") {
			t.Fatalf("evicting start: %+v, want admitted with s0 evicted", d)
		}
		if _, err := s.Renew(ctx, Key{"z", "u"}, id("s0"), ttl); !errors.Is(err, ErrRevoked) {
			t.Fatalf("evicted stream renew: %v, want ErrRevoked", err)
		}
	})

	t.Run("limit zero refuses every start, even with evict oldest", func(t *testing.T) {
		s, _ := newStore(t)
		for _, p := range []Policy{Deny, EvictOldest} {
			if d := acquire(t, s, "u", id("a"), 0, p); d.Admitted || d.RetryAfter <= 0 {
				t.Fatalf("policy %d, limit 0: %+v", p, d)
			}
		}
	})

	t.Run("users and zones never share a count", func(t *testing.T) {
		s, _ := newStore(t)
		users := []string{
			"alice", "alice}", "{alice}", "alice:", "a:lice", "alice\n", "alice\x00",
			strings.Repeat("x", MaxUserLen), strings.Repeat("x", MaxUserLen-1) + "y",
			"\xff\xfe", "ü", "{z}:alice", "z:alice",
		}
		for _, zone := range []string{"z", "z2", "z:alice"} {
			for _, u := range users {
				d, err := s.Acquire(ctx, AcquireRequest{Key: Key{zone, u}, ID: id("only"), Limit: 1, TTL: ttl})
				if err != nil || !d.Admitted || d.Active != 1 {
					t.Fatalf("zone %q user %q: %+v %v, want its own first slot", zone, u, d, err)
				}
			}
		}
	})

	t.Run("a per-user override wins over the caller's limit until cleared", func(t *testing.T) {
		s, _ := newStore(t)
		k := Key{"z", "u"}
		if _, ok, err := s.Override(ctx, k); ok || err != nil {
			t.Fatalf("override before any: ok=%v err=%v", ok, err)
		}
		if err := s.SetOverride(ctx, k, 1); err != nil {
			t.Fatal(err)
		}
		acquire(t, s, "u", id("a"), 3, Deny)
		if d := acquire(t, s, "u", id("b"), 3, Deny); d.Admitted || d.Limit != 1 {
			t.Fatalf("override 1: %+v", d)
		}
		if n, ok, _ := s.Override(ctx, k); !ok || n != 1 {
			t.Fatalf("Override = %d %v, want 1 true", n, ok)
		}
		if ok, err := s.ClearOverride(ctx, k); !ok || err != nil {
			t.Fatalf("clear: %v %v", ok, err)
		}
		if d := acquire(t, s, "u", id("b"), 3, Deny); !d.Admitted || d.Limit != 3 {
			t.Fatalf("after clear: %+v", d)
		}
		if ok, _ := s.ClearOverride(ctx, k); ok {
			t.Fatal("second clear reported an override")
		}
	})

	t.Run("list shows live leases oldest first", func(t *testing.T) {
		s, clock := newStore(t)
		for _, name := range []string{"c", "a", "b"} {
			acquire(t, s, "u", id(name), 3, Deny)
			clock.Advance(time.Second)
		}
		l, err := s.List(ctx, Key{"z", "u"})
		if err != nil || len(l) != 3 || l[0].ID != id("c") || l[1].ID != id("a") || l[2].ID != id("b") {
			t.Fatalf("list: %v %v", l, err)
		}
		for _, x := range l {
			if !x.Expires.After(x.Started) {
				t.Fatalf("lease %v expires before it starts", x)
			}
		}
		if l, err := s.List(ctx, Key{"z", "nobody"}); len(l) != 0 || err != nil {
			t.Fatalf("list unknown user: %v %v", l, err)
		}
	})

	t.Run("bad requests are refused, not stored", func(t *testing.T) {
		s, _ := newStore(t)
		long := strings.Repeat("x", MaxUserLen+1)
		for name, req := range map[string]AcquireRequest{
			"empty user":           {Key: Key{"z", ""}, ID: id("a"), Limit: 1, TTL: ttl},
			"long user":            {Key: Key{"z", long}, ID: id("a"), Limit: 1, TTL: ttl},
			"empty id":             {Key: Key{"z", "u"}, ID: "", Limit: 1, TTL: ttl},
			"short id":             {Key: Key{"z", "u"}, ID: "s0", Limit: 1, TTL: ttl},
			"upper id":             {Key: Key{"z", "u"}, ID: strings.ToUpper(id("a")), Limit: 1, TTL: ttl},
			"zero ttl":             {Key: Key{"z", "u"}, ID: id("a"), Limit: 1},
			"ttl past the maximum": {Key: Key{"z", "u"}, ID: id("a"), Limit: 1, TTL: MaxTTL + time.Millisecond},
		} {
			if _, err := s.Acquire(ctx, req); !errors.Is(err, ErrBadRequest) {
				t.Errorf("%s: %v, want ErrBadRequest", name, err)
			}
		}
		if _, err := s.List(ctx, Key{"z", long}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("list long user: %v", err)
		}
		if err := s.SetOverride(ctx, Key{"z", "u"}, -1); !errors.Is(err, ErrBadRequest) {
			t.Errorf("negative override: %v", err)
		}
	})

	t.Run("totals count a zone's live users and streams", func(t *testing.T) {
		s, clock := newStore(t)
		fill(t, s, "a", 3)
		fill(t, s, "b", 2)
		if _, err := s.Acquire(ctx, AcquireRequest{Key: Key{"other", "c"}, ID: id("x"), Limit: 1, TTL: ttl}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Totals(ctx, "z"); err != nil || got != (Totals{Users: 2, Streams: 5}) {
			t.Fatalf("totals: %+v %v, want 2 users 5 streams", got, err)
		}
		clock.Advance(ttl + time.Millisecond)
		if got, err := s.Totals(ctx, "z"); err != nil || got != (Totals{}) {
			t.Fatalf("totals after every lease lapsed: %+v %v", got, err)
		}
	})

	t.Run("the shared secret is the first one proposed", func(t *testing.T) {
		s, _ := newStore(t)
		first, err := s.SharedSecret(ctx, []byte("first"))
		if err != nil || string(first) != "first" {
			t.Fatalf("first proposal: %q %v", first, err)
		}
		if again, err := s.SharedSecret(ctx, []byte("second")); err != nil || string(again) != "first" {
			t.Fatalf("second proposal: %q %v, want the first kept", again, err)
		}
		if _, err := s.SharedSecret(ctx, nil); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("empty proposal: %v", err)
		}
	})

	t.Run("concurrent starts admit exactly the limit", func(t *testing.T) {
		s, _ := newStore(t)
		for round := range 5 {
			user := fmt.Sprintf("u%d", round)
			var admitted atomic.Int32
			var wg sync.WaitGroup
			for i := range 200 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := s.Acquire(ctx, AcquireRequest{Key: Key{"z", user}, ID: id(fmt.Sprint(i)), Limit: 3, TTL: ttl})
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
	})
}

func TestMemoryStoreConformance(t *testing.T) {
	testConformance(t, func(t *testing.T, clock *fakeClock) Store {
		return NewMemoryStore(MemoryOptions{Clock: clock.Now, SweepInterval: -1})
	})
}

func TestMemorySweepDropsIdleUsers(t *testing.T) {
	clock := &fakeClock{}
	var expired atomic.Int32
	s := NewMemoryStore(MemoryOptions{Clock: clock.Now, SweepInterval: -1, OnExpire: func(Key, Lease) { expired.Add(1) }})
	defer s.Close()
	for i := range 100 {
		s.Acquire(context.Background(), AcquireRequest{Key: Key{"z", fmt.Sprint(i)}, ID: id("a"), Limit: 1, TTL: ttl})
	}
	clock.Advance(ttl + time.Millisecond)
	s.Sweep()
	users := 0
	for i := range s.shards {
		users += len(s.shards[i].users)
	}
	if users != 0 || expired.Load() != 100 {
		t.Fatalf("after sweep: %d users kept, %d expiries heard; want 0 and 100", users, expired.Load())
	}
}
