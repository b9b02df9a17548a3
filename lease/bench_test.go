package lease

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// The store benchmarks run against a real redis-server that they start.
// Each reports its time per operation; BenchmarkRedisPing is the floor, one
// network round trip in the same run, to read the others against.

func benchRedis(b *testing.B) *redis.Client { return redistest.Start(b).Client(b) }

func BenchmarkRedisPing(b *testing.B) {
	client := benchRedis(b)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := client.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchStores runs fn against each store, sharing one Redis per run.
func benchStores(b *testing.B, fn func(b *testing.B, s Store)) {
	b.Run("memory", func(b *testing.B) {
		s := NewMemoryStore(MemoryOptions{})
		defer s.Close()
		fn(b, s)
	})
	b.Run("redis", func(b *testing.B) {
		s, _ := NewRedisStore(benchRedis(b), RedisOptions{})
		fn(b, s)
	})
}

func BenchmarkAcquireRelease(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		ctx := context.Background()
		var n atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := Key{"bench", "u" + strconv.FormatInt(n.Add(1)%10000, 10)}
				id := uuid.NewString()
				d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id, Limit: 1 << 20, TTL: time.Minute})
				if err != nil || !d.Admitted {
					b.Fatal(err, d)
				}
				if err := s.Release(ctx, k, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

func BenchmarkRenew(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		ctx := context.Background()
		const users = 1000
		ids := make([]string, users)
		for i := range ids {
			ids[i] = uuid.NewString()
			if _, err := s.Acquire(ctx, AcquireRequest{Key: Key{"bench", strconv.Itoa(i)}, ID: ids[i], Limit: 3, TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
		}
		var n atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(n.Add(1) % users)
				if _, err := s.Renew(ctx, Key{"bench", strconv.Itoa(i)}, ids[i], time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkStoreVersusRedisBenchmark compares the Redis store's acquire
// and release (a script, and a ZREM of the lease it returned, as Caddy
// releases a connection-mode stream) from 50 goroutines with what redis-benchmark,
// 50 clients, gets from EVALSHA of the acquire script alone, on the same
// Redis: what the store's client side costs, as a ratio. The two take
// turns, in rounds of about a second; the ratio is the median of the
// rounds', with the least and greatest beside it (this machine's speed
// wanders within a minute).
//
//	go test -run '^$' -bench StoreVersusRedisBenchmark -benchtime 9x ./lease/
//
// -benchtime Nx runs N rounds.
func BenchmarkStoreVersusRedisBenchmark(b *testing.B) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Skip("redis-benchmark is not installed (make bench-store installs it)")
	}
	srv := redistest.Start(b)
	pinned := pinApart(b, srv)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	b.Cleanup(func() { client.Close() })
	ctx := context.Background()
	sha, err := scriptAcquire.Load(ctx, client).Result()
	if err != nil {
		b.Fatal(err)
	}
	s, _ := NewRedisStore(client, RedisOptions{KeyPrefix: "bench2:"})
	var users atomic.Int64
	ours := func(d time.Duration) float64 {
		var done atomic.Int64
		stop := time.Now().Add(d)
		var wg sync.WaitGroup
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					k := Key{"bench", "u" + strconv.FormatInt(users.Add(1), 10)}
					id := uuid.NewString()
					d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id, Limit: 3, TTL: time.Minute})
					if err != nil {
						b.Error(err)
						return
					}
					if err := s.ReleaseLease(ctx, k, d.Lease); err != nil {
						b.Error(err)
						return
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(done.Load()) / d.Seconds()
	}
	host, port, _ := net.SplitHostPort(srv.Addr)
	theirs := func(n int) float64 {
		// A fresh user per call (__rand_int__ is 12 digits: the id is 16 bytes).
		args := []string{"-h", host, "-p", port, "-c", "50", "-n", strconv.Itoa(n), "-r", "100000000", "-q",
			"EVALSHA", sha, "3", "bench:{__rand_int__}:l", "bench:{__rand_int__}:t", "bench:{__rand_int__}:o"}
		for _, a := range acquireArgs("0000__rand_int__", AcquireRequest{Limit: 3, TTL: time.Minute}) {
			args = append(args, fmt.Sprint(a))
		}
		out, err := exec.Command("redis-benchmark", args...).CombinedOutput()
		if err != nil {
			b.Fatalf("redis-benchmark: %v\n%s", err, out)
		}
		for _, line := range strings.Split(strings.ReplaceAll(string(out), "\r", "\n"), "\n") {
			if before, _, ok := strings.Cut(line, " requests per second"); ok {
				f := strings.Fields(before)
				rate, _ := strconv.ParseFloat(f[len(f)-1], 64)
				return rate
			}
		}
		b.Fatalf("no rate in redis-benchmark's output:\n%s", out)
		return 0
	}
	var ratios []float64
	var oursSum, theirsSum float64
	calls := 20_000 // redis-benchmark's calls per round: about a second, once measured
	for i := range b.N {
		var r, o float64
		if i%2 == 0 { // each goes first in every other round
			r, o = theirs(calls), ours(time.Second)
		} else {
			o, r = ours(time.Second), theirs(calls)
		}
		calls = max(int(r), 1000)
		ratios = append(ratios, o/r)
		oursSum, theirsSum = oursSum+o, theirsSum+r
	}
	slices.Sort(ratios)
	b.ReportMetric(theirsSum/float64(b.N), "redis-benchmark-evalsha/s")
	b.ReportMetric(oursSum/float64(b.N), "acquire+release/s")
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
	b.ReportMetric(ratios[0], "ratio-min")
	b.ReportMetric(ratios[len(ratios)-1], "ratio-max")
	b.ReportMetric(pinned, "pinned")
}

// pinApart gives Redis core 0 and this process (the store's client, and
// redis-benchmark, which it starts) core 1, where there are two cores and
// taskset: the two clients then compete for neither Redis's core nor
// each other's time with Redis. It reports 1 if it pinned, 0 if not.
func pinApart(b *testing.B, srv *redistest.Server) float64 {
	if runtime.NumCPU() < 2 {
		return 0
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return 0
	}
	self := strconv.Itoa(os.Getpid())
	if out, err := exec.Command("taskset", "-a", "-pc", "1", self).CombinedOutput(); err != nil {
		b.Logf("taskset: %v: %s", err, out)
		return 0
	}
	if out, err := exec.Command("taskset", "-a", "-pc", "0", strconv.Itoa(srv.Pid())).CombinedOutput(); err != nil {
		b.Logf("taskset: %v: %s", err, out)
		return 0
	}
	b.Cleanup(func() { exec.Command("taskset", "-a", "-pc", "0-"+strconv.Itoa(runtime.NumCPU()-1), self).Run() })
	return 1
}

// BenchmarkRedisMemoryPerLease fills Redis with 100k users holding 3
// leases each and reports Redis's used_memory growth per lease.
func BenchmarkRedisMemoryPerLease(b *testing.B) {
	client := benchRedis(b)
	ctx := context.Background()
	s, _ := NewRedisStore(client, RedisOptions{})
	if err := scriptAcquire.Load(ctx, client).Err(); err != nil {
		b.Fatal(err)
	}
	for _, leases := range leaseCounts {
		b.Run(leases.name, func(b *testing.B) {
			users := leases.n / perUser
			for range b.N {
				client.FlushAll(ctx)
				before := usedMemory(b, client)
				for start := 0; start < users; start += 1000 {
					pipe := client.Pipeline()
					for u := start; u < min(start+1000, users); u++ {
						for range perUser {
							id, _ := packID(uuid.NewString())
							scriptAcquire.EvalSha(ctx, pipe, s.keys(Key{"default", fmt.Sprintf("user-%d", u)}),
								acquireArgs(id, AcquireRequest{Limit: perUser, TTL: time.Hour})...)
						}
					}
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(usedMemory(b, client)-before)/float64(users*perUser), "bytes/lease")
			}
		})
	}
}

// The memory benchmarks fill a store with users holding perUser leases
// each, this many leases in all.
var leaseCounts = []struct {
	name string
	n    int
}{{"100k", 100_000}, {"1M", 1_000_000}}

const perUser = 3

// BenchmarkMemoryStoreBytesPerLease measures the memory store's leases in
// the heap (runtime.MemStats after a GC), live ones of users holding 3.
func BenchmarkMemoryStoreBytesPerLease(b *testing.B) {
	for _, leases := range leaseCounts {
		b.Run(leases.name, func(b *testing.B) {
			users := leases.n / perUser
			for range b.N {
				s := NewMemoryStore(MemoryOptions{SweepInterval: -1})
				before := heapInUse()
				ctx := context.Background()
				for u := range users {
					for range perUser {
						s.Acquire(ctx, AcquireRequest{Key: Key{"default", fmt.Sprintf("user-%d", u)}, ID: uuid.NewString(), Limit: perUser, TTL: time.Hour})
					}
				}
				b.ReportMetric(float64(heapInUse()-before)/float64(users*perUser), "bytes/lease")
				runtime.KeepAlive(s)
				s.Close()
			}
		})
	}
}

// BenchmarkAdmissionAtScale measures a start and its release with 1k, 100k
// and 1M live leases already in the store (3 per user): admission must not
// slow down as the store fills.
func BenchmarkAdmissionAtScale(b *testing.B) {
	for _, live := range []int{1_000, 100_000, 1_000_000} {
		name := strconv.Itoa(live/1000) + "k"
		if live >= 1_000_000 {
			name = strconv.Itoa(live/1_000_000) + "M"
		}
		b.Run("memory/"+name, func(b *testing.B) {
			s := NewMemoryStore(MemoryOptions{SweepInterval: -1})
			defer s.Close()
			ctx := context.Background()
			for i := range live {
				s.Acquire(ctx, AcquireRequest{Key: Key{"default", "filler-" + strconv.Itoa(i/3)}, ID: uuid.NewString(), Limit: 3, TTL: time.Hour})
			}
			benchAdmit(b, s)
		})
		b.Run("redis/"+name, func(b *testing.B) {
			client := benchRedis(b)
			s, _ := NewRedisStore(client, RedisOptions{})
			fillRedis(b, client, s, live)
			benchAdmit(b, s)
		})
	}
}

func benchAdmit(b *testing.B, s Store) {
	ctx := context.Background()
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := Key{"default", "new-" + strconv.FormatInt(n.Add(1), 10)}
			id := uuid.NewString()
			if d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id, Limit: 3, TTL: time.Minute}); err != nil || !d.Admitted {
				b.Fatal(err, d)
			}
			if err := s.Release(ctx, k, id); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fillRedis puts live leases into Redis, 3 per user, pipelined.
func fillRedis(b *testing.B, client redis.UniversalClient, s *RedisStore, live int) {
	ctx := context.Background()
	if err := scriptAcquire.Load(ctx, client).Err(); err != nil {
		b.Fatal(err)
	}
	for start := 0; start < live; start += 3000 {
		pipe := client.Pipeline()
		for i := start; i < min(start+3000, live); i++ {
			id, _ := packID(uuid.NewString())
			scriptAcquire.EvalSha(ctx, pipe, s.keys(Key{"default", "filler-" + strconv.Itoa(i/3)}),
				acquireArgs(id, AcquireRequest{Limit: 3, TTL: time.Hour})...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOthersDuringCloseFlood measures other users' acquire+release
// beside a user who has already started and closed 100,000 streams and goes
// on at 4,000 a second, against the same with no flooder. It reports the
// p99 of the other users' calls, the flooder's own mean call, and the
// tombstones the flooder left in the store: capped, so its calls (which
// walk its tombstones under its shard's lock, or in its Lua script) cost
// what anyone's do.
//
//	go test -run '^$' -bench OthersDuringCloseFlood -benchtime 20000x ./lease/
func BenchmarkOthersDuringCloseFlood(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		for _, flooding := range []bool{false, true} {
			name := "quiet"
			if flooding {
				name = "flood"
			}
			b.Run(name, func(b *testing.B) {
				ctx, stop := context.WithCancel(context.Background())
				defer stop()
				floodKey := Key{"z", "flooder-" + uuid.NewString()}
				type floodResult struct {
					closes int
					took   time.Duration
				}
				flooded := make(chan floodResult, 1)
				if flooding {
					flood(b, s, floodKey)
					go func() {
						var r floodResult
						tick := time.NewTicker(time.Millisecond)
						defer tick.Stop()
						for ctx.Err() == nil {
							<-tick.C
							for range 4 { // 4 a millisecond
								id := uuid.NewString()
								began := time.Now()
								if d, err := s.Acquire(context.Background(), AcquireRequest{Key: floodKey, ID: id, Limit: 8, TTL: ttl}); err == nil && d.Admitted {
									s.Revoke(context.Background(), floodKey, id, TombstoneTTL(ttl))
									r.closes++
									r.took += time.Since(began)
								}
							}
						}
						flooded <- r
					}()
				}
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := range b.N {
					key := Key{"z", "other" + strconv.Itoa(i%1000)}
					id := uuid.NewString()
					began := time.Now()
					if _, err := s.Acquire(ctx, AcquireRequest{Key: key, ID: id, Limit: 3, TTL: time.Hour}); err != nil {
						b.Fatal(err)
					}
					if err := s.Release(ctx, key, id); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(began))
				}
				b.StopTimer()
				stop()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "others-p99-µs")
				if flooding {
					r := <-flooded
					b.ReportMetric(float64(r.took.Microseconds())/float64(max(r.closes, 1)), "flooder-close-µs")
					b.ReportMetric(float64(tombstonesOf(b, s, floodKey)), "flooder-tombstones")
				}
			})
		}
	})
}

// tombstonesOf counts the tombstones a store keeps for key.
func tombstonesOf(t testing.TB, s Store, key Key) int {
	switch s := s.(type) {
	case *MemoryStore:
		sh := s.shard(key)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if u := sh.users[key]; u != nil {
			return len(u.tombstones)
		}
		return 0
	case *RedisStore:
		n, err := s.client.ZCard(context.Background(), s.keys(key)[1]).Result()
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	t.Fatalf("no way to count the tombstones of a %T", s)
	return 0
}
