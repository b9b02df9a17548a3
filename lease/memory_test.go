package lease

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemorySweepDropsIdleUsers(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	var expired atomic.Int32
	s := NewMemoryStore(MemoryOptions{Clock: clock, SweepInterval: -1, OnExpire: func(Key, Lease) { expired.Add(1) }})
	defer s.Close()
	for i := range 100 {
		s.Acquire(context.Background(), AcquireRequest{Key: Key{"z", fmt.Sprint(i)}, ID: id("a"), Limit: 1, TTL: ttl})
	}
	offset.Add(int64(ttl + time.Millisecond))
	s.Sweep()
	users := 0
	for i := range s.shards {
		users += len(s.shards[i].users)
	}
	if users != 0 || expired.Load() != 100 {
		t.Fatalf("after sweep: %d users kept, %d expiries heard; want 0 and 100", users, expired.Load())
	}
}
