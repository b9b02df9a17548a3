package lease

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// TestRedisKeysStayInOneSlot shows that every key of one (zone, user) hashes
// to one Cluster slot whatever bytes the user holds, and that different
// users never share keys. A real Cluster's CLUSTER KEYSLOT checks every key
// and the slot computed here.
func TestRedisKeysStayInOneSlot(t *testing.T) {
	client := redistest.StartCluster(t).Client(t)
	s, err := NewRedisStore(client, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	users := []string{"alice", "{alice}", "}{", "a:b", "a\nb", "a\x00b", "\xff\xfe\x00", strings.Repeat("}", 512), strings.Repeat("x", 512)}
	seen := map[string]string{}
	for _, zone := range []string{"default", "z}", "{"} {
		for _, u := range users {
			keys := s.keys(Key{zone, u})
			slot := clusterSlot(keys[0])
			for _, k := range keys {
				got, err := client.ClusterKeySlot(context.Background(), k).Result()
				if err != nil {
					t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
				}
				if got != int64(slot) {
					t.Fatalf("zone %q user %q: CLUSTER KEYSLOT %q = %d, want %d, the slot of %q", zone, u, k, got, slot, keys[0])
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

// TestRedisKeysExpireAfterTheirLastLease: a user who stops leaves nothing
// behind in Redis. The lease key expires with its last lease, renewals
// included, and the tombstone key with its last tombstone, without any
// further call. (A per-user override is operator data: it stays until
// cleared.)
func TestRedisKeysExpireAfterTheirLastLease(t *testing.T) {
	client := redistest.Start(t).Client(t)
	s, _ := NewRedisStore(client, RedisOptions{})
	ctx := context.Background()
	k := Key{"z", "abandoned"}
	keys := s.keys(k)
	const short = 500 * time.Millisecond
	pttl := func(key string) time.Duration {
		t.Helper()
		d, err := client.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// Two leases: the key lives as long as the longer one, here renewed
	// to four times the first lease (longer than that, with room for a
	// slow machine, and no longer than the renewal).
	for _, name := range []string{"a", "b"} {
		if d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id(name), Limit: 3, TTL: short}); err != nil || !d.Admitted {
			t.Fatalf("acquire %s: %+v %v", name, d, err)
		}
	}
	if _, err := s.Renew(ctx, k, id("b"), 4*short); err != nil {
		t.Fatal(err)
	}
	if got := pttl(keys[0]); got <= short || got > 4*short+time.Millisecond {
		t.Fatalf("lease key expires in %v, want with its last lease (%v)", got, 4*short)
	}
	// A revoke leaves a tombstone whose key expires with it.
	if err := s.Revoke(ctx, k, id("a"), short); err != nil {
		t.Fatal(err)
	}
	if got := pttl(keys[1]); got <= 0 || got > short+time.Millisecond {
		t.Fatalf("tombstone key expires in %v, want with its tombstone (%v)", got, short)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, key := range keys[:2] {
		for {
			n, err := client.Exists(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("key %q still exists %v after its last lease lapsed (PTTL %v)", key, 10*time.Second, pttl(key))
			}
			time.Sleep(20 * time.Millisecond)
		}
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
	client := redistest.Start(t).Client(t)
	s, _ := NewRedisStore(client, RedisOptions{})
	ctx := context.Background()
	for i := range 3 {
		if err := client.ScriptFlush(ctx).Err(); err != nil {
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
