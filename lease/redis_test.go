package lease

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// redisFactory opens stores on one client, each under its own key prefix
// so that subtests do not see each other's leases.
func redisFactory(client redis.UniversalClient) storeFactory {
	n := 0
	return func(t *testing.T, clock *fakeClock) Store {
		n++
		s, err := NewRedisStore(client, RedisOptions{KeyPrefix: fmt.Sprintf("conformance%d:", n), ClockOffset: clock.Offset})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestRedisStoreConformance(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}})
	defer client.Close()
	testConformance(t, redisFactory(client))
}

func TestRedisClusterConformance(t *testing.T) {
	cluster := redistest.StartCluster(t)
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cluster.Addrs()})
	defer client.Close()
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("several addresses gave a %T, want a cluster client", client)
	}
	testConformance(t, redisFactory(client))
}

// TestRedisKeysStayInOneSlot shows that every key of one (zone, user) hashes
// to one Cluster slot whatever bytes the user holds, and that different
// users never share keys. A real Cluster's CLUSTER KEYSLOT checks every key
// and the slot computed here.
func TestRedisKeysStayInOneSlot(t *testing.T) {
	cluster := redistest.StartCluster(t)
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cluster.Addrs()})
	defer client.Close()
	s, err := NewRedisStore(client, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := cluster.Nodes[0]
	users := []string{"alice", "{alice}", "}{", "a:b", "a\nb", "a\x00b", "\xff\xfe\x00", strings.Repeat("}", 512), strings.Repeat("x", 512)}
	seen := map[string]string{}
	for _, zone := range []string{"default", "z}", "{"} {
		for _, u := range users {
			keys := s.keys(Key{zone, u})
			slot := clusterSlot(keys[0])
			for _, k := range keys {
				got, err := node.Do("CLUSTER", "KEYSLOT", k)
				if err != nil {
					t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
				}
				if got != fmt.Sprint(slot) {
					t.Fatalf("zone %q user %q: CLUSTER KEYSLOT %q = %s, want %d, the slot of %q", zone, u, k, got, slot, keys[0])
				}
				if other, dup := seen[k]; dup {
					t.Fatalf("key %q shared by %q and %q", k, other, zone+"/"+u)
				}
				seen[k] = zone + "/" + u
			}
		}
	}
	if _, err := NewRedisStore(client, RedisOptions{KeyPrefix: "a{b}:"}); err == nil {
		t.Fatal("a key prefix with braces was accepted")
	}
}

// clusterSlot is Redis Cluster's key slot: CRC16 of the hash tag (the part
// between the first { and the next }, when not empty), mod 16384.
func clusterSlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for _, b := range []byte(key) {
		crc ^= uint16(b) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// TestRedisScriptsComeBackAfterScriptFlush: the store runs its scripts by
// EVALSHA and loads them again when Redis has forgotten them (NOSCRIPT),
// as after a restart or SCRIPT FLUSH.
func TestRedisScriptsComeBackAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer client.Close()
	s, _ := NewRedisStore(client, RedisOptions{})
	ctx := context.Background()
	for i := range 3 {
		if _, err := srv.Do("SCRIPT", "FLUSH"); err != nil {
			t.Fatal(err)
		}
		d, err := s.Acquire(ctx, AcquireRequest{Key: Key{"z", "u"}, ID: id(fmt.Sprint(i)), Limit: 3, TTL: ttl})
		if err != nil || !d.Admitted {
			t.Fatalf("acquire after SCRIPT FLUSH: %+v %v", d, err)
		}
	}
	if l, err := s.List(ctx, Key{"z", "u"}); err != nil || len(l) != 3 {
		t.Fatalf("list: %v %v", l, err)
	}
}
