package lease

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestIDsAreBoundToTheirUser(t *testing.T) {
	secret, other := NewSecret(), NewSecret()
	alice, bob := Key{"z", "alice"}, Key{"z", "bob"}
	seen := map[string]bool{}
	for range 1000 {
		id := NewID(secret, alice)
		if _, err := parseID(id); err != nil {
			t.Fatalf("issued id %q is not a canonical UUID: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("id %s issued twice", id)
		}
		seen[id] = true
		if !VerifyID(secret, alice, id) {
			t.Fatalf("own id %s refused", id)
		}
		for name, ok := range map[string]bool{
			"another user":   VerifyID(secret, bob, id),
			"another zone":   VerifyID(secret, Key{"z2", "alice"}, id),
			"another secret": VerifyID(other, alice, id),
			"a split key":    VerifyID(secret, Key{"z\x00alice", ""}, id),
		} {
			if ok {
				t.Fatalf("id %s accepted for %s", id, name)
			}
		}
	}
	for _, forged := range []string{uuid.NewString(), strings.Repeat("0", 8) + "-0000-8000-8000-" + strings.Repeat("0", 12), "not-a-uuid", ""} {
		if VerifyID(secret, alice, forged) {
			t.Fatalf("forged id %q accepted", forged)
		}
	}
}
