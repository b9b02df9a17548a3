package lease

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// The figures of docs/BENCHMARKS.md's "Past one machine".

// crc16 is Redis Cluster's key hash (CRC16-CCITT, XMODEM).
func crc16(s string) uint16 {
	var crc uint16
	for i := range len(s) {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slotOf is the Cluster slot of a key: of its hash tag, if it has one.
func slotOf(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	return int(crc16(key) % 16384)
}

// TestSlotOfAgreesWithRedis: slotOf is Redis Cluster's hash (the
// specification's example: "123456789" hashes to 0x31C3).
func TestSlotOfAgreesWithRedis(t *testing.T) {
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16 = %#x, want 0x31c3", got)
	}
	if slotOf("a{user1000}b") != slotOf("{user1000}") {
		t.Fatal("a hash tag does not decide the slot")
	}
}

// BenchmarkSlotSpread puts the keys of 1M users (one zone; ids as an auth
// layer gives them: numbers, and UUIDs) in Cluster slots, as RedisStore
// names them, and reports how evenly: the fullest and emptiest slot
// against the mean, and the spread (standard deviation over the mean).
func BenchmarkSlotSpread(b *testing.B) {
	s, _ := NewRedisStore(redis.NewClient(&redis.Options{}), RedisOptions{})
	for _, kind := range []string{"numbers", "uuids"} {
		b.Run(kind, func(b *testing.B) {
			for range b.N {
				const users = 1_000_000
				var count [16384]int
				for u := range users {
					user := "user-" + strconv.Itoa(u)
					if kind == "uuids" {
						user = uuid.NewString()
					}
					count[slotOf(s.keys(Key{"default", user})[0])]++
				}
				mean := float64(users) / 16384
				lo, hi, sq := users, 0, 0.0
				for _, c := range count {
					lo, hi = min(lo, c), max(hi, c)
					sq += (float64(c) - mean) * (float64(c) - mean)
				}
				b.ReportMetric(float64(hi)/mean, "fullest/mean")
				b.ReportMetric(float64(lo)/mean, "emptiest/mean")
				b.ReportMetric(math.Sqrt(sq/16384)/mean, "stddev/mean")
				// Over 3 masters, each with a third of the slots, as
				// redis-cli --cluster create splits them.
				var shard [3]int
				for slot, c := range count {
					shard[min(slot/5462, 2)] += c
				}
				b.ReportMetric(float64(max(shard[0], shard[1], shard[2]))/float64(min(shard[0], shard[1], shard[2])), "3-shards-fullest/emptiest")
			}
		})
	}
}

// BenchmarkRedisCPUPerCall runs the store's calls from 50 goroutines and
// reports the CPU time Redis spent per call (INFO's used_cpu_sys and
// used_cpu_user, before and after): a renewal of a live lease, and a start
// with its release.
func BenchmarkRedisCPUPerCall(b *testing.B) {
	client := benchRedis(b)
	s, _ := NewRedisStore(client, RedisOptions{})
	ctx := context.Background()
	const streams = 10_000
	ids := make([]string, streams)
	for i := range ids {
		ids[i] = uuid.NewString()
		if _, err := s.Acquire(ctx, AcquireRequest{Key: Key{"default", "viewer-" + strconv.Itoa(i)}, ID: ids[i], Limit: 3, TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name  string
		calls int
		call  func(i int) error
	}{
		{"renew", 1, func(i int) error {
			_, err := s.Renew(ctx, Key{"default", "viewer-" + strconv.Itoa(i%streams)}, ids[i%streams], time.Hour)
			return err
		}},
		{"start+release", 2, func(i int) error {
			k, id := Key{"default", "churn-" + strconv.Itoa(i)}, uuid.NewString()
			if _, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id, Limit: 3, TTL: time.Minute}); err != nil {
				return err
			}
			return s.Release(ctx, k, id)
		}},
		{"start+release-whole", 2, func(i int) error {
			k, id := Key{"default", "churn-whole-" + strconv.Itoa(i)}, uuid.NewString()
			d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id, Limit: 3, TTL: time.Minute})
			if err != nil {
				return err
			}
			return s.ReleaseLease(ctx, k, d.Lease)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			before := redisCPU(b, client)
			var wg sync.WaitGroup
			next := make(chan int)
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						if err := c.call(i); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wg.Wait()
			used := redisCPU(b, client) - before
			b.ReportMetric(used.Seconds()*1e6/float64(b.N*c.calls), "redis-cpu-µs/call")
		})
	}
}

// redisCPU is the CPU time the Redis server has used.
func redisCPU(b *testing.B, client *redis.Client) time.Duration {
	info, err := client.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
