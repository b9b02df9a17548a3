package lease_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
	"github.com/streamlimit/caddy-streamlimit/lease"
	"github.com/streamlimit/caddy-streamlimit/lease/leasetest"
)

// One contract, one suite: every store here passes leasetest unchanged. A
// difference between stores is a bug in one of them.

func TestMemoryStoreConformance(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) (lease.Store, *leasetest.Clock) {
		clock := new(leasetest.Clock)
		return lease.NewMemoryStore(lease.MemoryOptions{Clock: clock.Now, SweepInterval: -1}), clock
	})
}

// Redis keeps its own time (TIME, in each script): the suite waits on it.

func TestRedisStoreConformance(t *testing.T) {
	t.Parallel()
	leasetest.Run(t, openRedis(redistest.Start(t).Client(t)))
}

func TestRedisClusterConformance(t *testing.T) {
	t.Parallel()
	client := redistest.StartCluster(t).Client(t)
	leasetest.Run(t, openRedis(client))
}

// openRedis opens stores on one client, each under its own key prefix so
// that the cases do not see each other's leases.
func openRedis(client redis.UniversalClient) leasetest.Opener {
	var n atomic.Int64
	return func(t *testing.T) (lease.Store, *leasetest.Clock) {
		s, err := lease.NewRedisStore(client, lease.RedisOptions{KeyPrefix: fmt.Sprintf("conformance%d:", n.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		return s, nil
	}
}
