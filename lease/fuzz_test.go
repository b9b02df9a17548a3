package lease

import (
	"strings"
	"testing"
)

// FuzzRedisKeys: distinct (zone, user) pairs never share a key, and every
// key of one pair lies in one Cluster slot, whatever bytes they hold.
func FuzzRedisKeys(f *testing.F) {
	for _, seed := range [][3]string{
		{"default", "alice", "bob"},
		{"z", "a}", "a"},
		{"z", "{a}", "a"},
		{"{", "}", "{}"},
		{"z.a", "b", "a.b"},
		{"z", "a:b", "a\x00b"},
		{"", "\xff\xfe", "\xfe\xff"},
		{"live", strings.Repeat("}", 512), strings.Repeat("{", 512)},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	s, err := NewRedisStore(nil, RedisOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, zone, a, b string) {
		ka, kb := s.keys(Key{zone, a}), s.keys(Key{zone, b})
		kz := s.keys(Key{zone + "\x00", a})
		for _, keys := range [][]string{ka, kb, kz} {
			slot := clusterSlot(keys[0])
			for _, k := range keys[1:] {
				if clusterSlot(k) != slot {
					t.Fatalf("keys %q split over slots", keys)
				}
			}
		}
		if a != b {
			for i := range ka {
				if ka[i] == kb[i] {
					t.Fatalf("users %q and %q share key %q", a, b, ka[i])
				}
			}
		}
		if ka[0] == kz[0] {
			t.Fatalf("zones %q and %q share key %q", zone, zone+"\x00", ka[0])
		}
	})
}

// FuzzVerifyID: no input makes VerifyID panic, and an id verifies only for
// the key it was issued to.
func FuzzVerifyID(f *testing.F) {
	f.Add("z", "alice", "bob", "6f1c1c1e-2b4a-8c55-9d7e-2f4a8d9b0c11")
	f.Add("", "", "x", "")
	f.Add("z", "a", "a\x00", "00000000-0000-8000-8000-000000000000")
	secret := NewSecret()
	f.Fuzz(func(t *testing.T, zone, user, other, forged string) {
		VerifyID(secret, Key{zone, user}, forged)
		id := NewID(secret, Key{zone, user})
		if !VerifyID(secret, Key{zone, user}, id) {
			t.Fatalf("own id %s refused", id)
		}
		if other != user && VerifyID(secret, Key{zone, other}, id) {
			t.Fatalf("id of %q accepted for %q", user, other)
		}
	})
}
