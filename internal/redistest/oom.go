package redistest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// StartTight runs a standalone server with a small maxmemory and the
// noeviction policy, as an operator who sized Redis tightly would have.
func StartTight(t testing.TB) *Server {
	t.Helper()
	return Start(t, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
}

// Fill writes to a server started by StartTight until Redis refuses even a
// small write. Called again, it fills what Redis has freed since.
func (s *Server) Fill(t testing.TB) {
	t.Helper()
	// The client stays open until the test ends: closing it would free its
	// buffers, and with them room for a few more writes.
	if s.filler == nil {
		s.filler = redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 1})
		filler := s.filler
		t.Cleanup(func() { filler.Close() })
	}
	c := s.filler
	ctx := context.Background()
	// Ever smaller values: a refused large SET frees its own buffer and
	// leaves room for a smaller one.
	n := s.filled
	defer func() { s.filled = n }()
	for size := 64 << 10; size >= 1; size /= 4 {
		for ; ; n++ {
			err := c.Set(ctx, fmt.Sprint("filler:", n), strings.Repeat("x", size), 0).Err()
			if IsOOM(err) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if n > s.filled+100000 {
				t.Fatal("Redis never ran out of memory")
			}
		}
	}
	if err := c.Set(ctx, "p", "x", 0).Err(); !IsOOM(err) {
		t.Fatalf("a small SET on the full Redis: %v, want OOM", err)
	}
}

// IsOOM reports whether err is Redis's refusal of a write past maxmemory.
func IsOOM(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "OOM ")
}
