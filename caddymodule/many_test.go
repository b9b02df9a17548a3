package caddymodule

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// TestManyLongStreams holds 2,000 long connection-mode streams of 700 users
// through one Caddy: every user holds exactly its limit or less, the limit
// still refuses, and once they end no goroutine or file descriptor is left.
func TestManyLongStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 8,000 sockets")
	}
	p := startCaddy(t, connectionSite)
	baseGoroutines, baseFDs := runtime.NumGoroutine(), openFDs()
	began := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(began).Round(time.Millisecond), what) }

	const streams, users = 2000, 700
	live := make([]*liveStream, streams)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range streams {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			live[i] = p.open("/slow/idle/v.ts", fmt.Sprintf("many-%d", i%users))
		}()
	}
	wg.Wait()
	phase("2,000 streams open")
	for i, s := range live {
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d (user %d): %s", i, i%users, s.resp.Status)
		}
	}
	// Users 0..599 hold 3 streams, users 600..699 hold 2.
	for _, u := range []int{0, 299, 599} {
		if r, _ := p.do(http.MethodGet, "/slow/idle/v.ts", fmt.Sprintf("many-%d", u)); r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("user %d at its limit: %s", u, r.Status)
		}
	}
	for _, u := range []int{600, 699} {
		if n := len(p.listed("/slow/streams", fmt.Sprintf("many-%d", u))); n != 2 {
			t.Fatalf("user %d holds %d streams, want 2", u, n)
		}
	}
	during := runtime.NumGoroutine()
	phase("limits checked")

	for _, s := range live {
		s.cancel()
	}
	eventually(t, "every slot is free", func() bool {
		for _, u := range []int{0, 123, 599, 699} {
			if len(p.listed("/slow/streams", fmt.Sprintf("many-%d", u))) != 0 {
				return false
			}
		}
		return true
	})
	phase("every slot free")
	client.CloseIdleConnections()
	eventually(t, "goroutines and descriptors back to where they were", func() bool {
		return runtime.NumGoroutine() <= baseGoroutines+10 && openFDs() <= baseFDs+10
	})
	t.Logf("goroutines: %d before, %d with 2,000 streams, %d after; descriptors: %d before, %d after",
		baseGoroutines, during, runtime.NumGoroutine(), baseFDs, openFDs())
}
