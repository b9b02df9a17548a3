package lease

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// TestBatchedCallsGetTheirOwnAnswers: calls that share pipelines each get
// the answer to their own script, also after Redis forgot the scripts
// (a restart, a failover), and a caller that gives up returns at once.
func TestBatchedCallsGetTheirOwnAnswers(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	s, _ := NewRedisStore(client, RedisOptions{})
	ctx := context.Background()
	for _, round := range []string{"scripts loaded", "scripts flushed"} {
		if round == "scripts flushed" {
			if err := client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for i := range 300 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k := Key{"batch", round + strconv.Itoa(i%100)} // 3 per user
				id := uuid.NewString()
				d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id, Limit: 3, TTL: time.Minute})
				if err != nil || !d.Admitted || d.Lease.ID != id {
					t.Errorf("%s: acquire %s: %+v, %v", round, id, d, err)
					return
				}
				if l, err := s.Renew(ctx, k, id, 2*time.Minute); err != nil || l.ID != id {
					t.Errorf("%s: renew %s: %+v, %v", round, id, l, err)
				}
				if err := s.Release(ctx, k, id); err != nil {
					t.Errorf("%s: release %s: %v", round, id, err)
				}
				if err := s.Release(ctx, k, id); !errors.Is(err, ErrNotFound) {
					t.Errorf("%s: second release of %s: %v, want ErrNotFound", round, id, err)
				}
			}()
		}
		wg.Wait()
	}

	srv.Freeze() // nothing is answered now
	defer srv.Restart(t)
	gone, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := s.Acquire(gone, AcquireRequest{Key: Key{"batch", "frozen"}, ID: uuid.NewString(), Limit: 3, TTL: time.Minute})
	if err == nil {
		t.Fatal("acquire from a frozen Redis succeeded")
	}
}
