package lease

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// floodCloses is how many start+close pairs one user sends in the flood.
const floodCloses = 100_000

// flood has one user start and close floodCloses streams, from several
// goroutines at once, as a hostile client would.
func flood(t testing.TB, s Store, key Key) {
	t.Helper()
	ctx := context.Background()
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range floodCloses / workers {
				id := uuid.NewString()
				d, err := s.Acquire(ctx, AcquireRequest{Key: key, ID: id, Limit: workers, TTL: ttl})
				if err == nil && d.Admitted {
					err = s.Revoke(ctx, key, id, TombstoneTTL(ttl))
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestTombstoneFloodStaysBounded: a user who starts and closes 100,000
// streams leaves at most MaxTombstones behind, in either store.
func TestTombstoneFloodStaysBounded(t *testing.T) {
	key := Key{"z", "flooder"}
	t.Run("memory", func(t *testing.T) {
		s := NewMemoryStore(MemoryOptions{SweepInterval: -1})
		defer s.Close()
		flood(t, s, key)
		if n := tombstonesOf(t, s, key); n > MaxTombstones {
			t.Fatalf("%d tombstones after %d closes, want at most %d", n, floodCloses, MaxTombstones)
		}
	})
	t.Run("redis", func(t *testing.T) {
		client := redistest.Start(t).Client(t)
		s, err := NewRedisStore(client, RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		flood(t, s, key)
		t.Logf("%d closes in %v", floodCloses, time.Since(began).Round(time.Millisecond))
		if n := tombstonesOf(t, s, key); n > MaxTombstones {
			t.Fatalf("%d tombstones in Redis after %d closes, want at most %d", n, floodCloses, MaxTombstones)
		}
		if n, _ := client.ZCard(context.Background(), s.keys(key)[0]).Result(); n != 0 {
			t.Fatalf("%d leases left after every stream was closed", n)
		}
	})
}
