package lease

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// TestRedisOutOfMemoryWritesFailWhole fills a Redis that has maxmemory and
// noeviction, as an operator who sized it tightly would have. Every script
// that would grow memory must then fail, with nothing written (so the
// handler applies on_store_error), while what needs no memory (a refusal
// at the limit, a plain release) still works.
func TestRedisOutOfMemoryWritesFailWhole(t *testing.T) {
	srv := redistest.StartTight(t)
	client := srv.Client(t)
	s, err := NewRedisStore(client, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	full, live, spare := Key{"z", "full"}, Key{"z", "live"}, Key{"z", "spare"}
	for i, k := range []Key{full, full, full, live, spare} {
		if d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id(k.User + string(rune('a'+i))), Limit: 3, TTL: time.Minute}); err != nil || !d.Admitted {
			t.Fatalf("before filling Redis: %+v %v", d, err)
		}
	}
	// A lapsed lease and a lapsed tombstone: the old scripts pruned them
	// first, a write that let every later write through.
	if err := s.Revoke(ctx, live, id("lived"), time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, AcquireRequest{Key: live, ID: id("short"), Limit: 3, TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, AcquireRequest{Key: live, ID: id("stay"), Limit: 3, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)

	srv.Fill(t)
	usedBefore := usedMemory(t, client)

	// Redis frees a little memory of its own now and then (it shrinks the
	// buffers of idle clients): a start it then has room for succeeds, as
	// it should. The test fills it again before each check, and takes a
	// start that found room as that, not as a write let through.
	refills := 0
	for i := range 200 {
		k := Key{"z", fmt.Sprint("newcomer", i)}
		_, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id(k.User), Limit: 3, TTL: time.Minute})
		if err == nil && refills < 20 {
			refills++
			srv.Fill(t)
			continue
		}
		if !redistest.IsOOM(err) {
			t.Fatalf("start of a new user under OOM: %v, want Redis's OOM error", err)
		}
		if n, _ := client.Exists(ctx, s.keys(k)...).Result(); n != 0 {
			t.Fatalf("a start that failed with OOM left %d keys", n)
		}
	}
	srv.Fill(t)
	if _, err := s.Acquire(ctx, AcquireRequest{Key: live, ID: id("another"), Limit: 3, TTL: time.Minute}); !redistest.IsOOM(err) {
		t.Fatalf("start beside lapsed leases under OOM: %v, want OOM", err)
	}
	srv.Fill(t)
	if _, err := s.Renew(ctx, live, id("stay"), time.Minute); !redistest.IsOOM(err) {
		t.Fatalf("renew under OOM: %v, want OOM", err)
	}
	srv.Fill(t)
	if err := s.Revoke(ctx, full, id("fullb"), time.Minute); !redistest.IsOOM(err) {
		t.Fatalf("revoke under OOM: %v, want OOM", err)
	}
	if l, _ := s.List(ctx, full); len(l) != 3 {
		t.Fatalf("a revoke that failed with OOM changed the leases: %v", l)
	}
	srv.Fill(t)
	if _, err := s.Acquire(ctx, AcquireRequest{Key: full, ID: id("fourth"), Limit: 3, TTL: time.Minute, Policy: EvictOldest}); !redistest.IsOOM(err) {
		t.Fatalf("evicting start under OOM: %v, want OOM", err)
	}
	if l, _ := s.List(ctx, full); len(l) != 3 {
		t.Fatalf("an eviction that failed with OOM changed the leases: %v", l)
	}

	// What grows nothing still works: a refusal at the limit, a release.
	if d, err := s.Acquire(ctx, AcquireRequest{Key: full, ID: id("fourth"), Limit: 3, TTL: time.Minute}); err != nil || d.Admitted {
		t.Fatalf("refusal at the limit under OOM: %+v %v, want refused", d, err)
	}
	if err := s.Release(ctx, spare, id("sparee")); err != nil {
		t.Fatalf("release under OOM: %v", err)
	}
	if used := usedMemory(t, client); used > usedBefore+64<<10 {
		t.Fatalf("memory grew from %d to %d bytes while Redis refused writes", usedBefore, used)
	}
}

func usedMemory(t testing.TB, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			var n int64
			for _, c := range v {
				n = n*10 + int64(c-'0')
			}
			return n
		}
	}
	t.Fatal("INFO memory has no used_memory")
	return 0
}
