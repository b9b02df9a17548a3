package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// servedLog is an origin in front of the test media that notes, per
// User-Agent, which segments it served whole.
type servedLog struct {
	mu     sync.Mutex
	served map[string]map[string]bool // User-Agent -> segment paths
}

func (s *servedLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if strings.HasSuffix(r.URL.Path, ".ts") {
			s.mu.Lock()
			if s.served[r.UserAgent()] == nil {
				s.served[r.UserAgent()] = map[string]bool{}
			}
			s.served[r.UserAgent()][r.URL.Path] = true
			s.mu.Unlock()
		}
	})
}

func (s *servedLog) count(ua string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.served[ua])
}

// TestSharedURLIsCountedAsScreens: a user's player plays a title; the
// tokenized playlist URL it plays is passed to five other machines, whose
// stock ffmpeg players play it too. Every player reads at 8 times the
// speed of the media, as a player plays, only faster. With limit 3, the
// first player plays to the end; two more may play, each holding a slot of
// its own (the user's other two); the three beyond are refused, with 429
// stream_shared, once they are seen. Both stores.
func TestSharedURLIsCountedAsScreens(t *testing.T) {
	needFFmpeg(t)
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		log := &servedLog{served: map[string]map[string]bool{}}
		o := origintest.StartWith(t, log.wrap(testmedia.Origin(testmedia.Dir(t))))
		p := mediaSiteWith(t, o.Addr, "limit 3\n"+storeBlock)
		const user = "sharer"

		// The owner's page opens the title and hands its player the
		// rendition it chose: a playlist URL that carries the stream.
		page := newSimPlayer(t, p, user, "owner's page")
		if !page.open() || !strings.Contains(page.variants[0], "stream_id=") {
			t.Fatalf("no tokenized variant: %v %v", page.variants, page.refused)
		}
		shared, segments := page.variants[0], len(page.segments[0])

		play := func(ua string) *exec.Cmd {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			t.Cleanup(cancel)
			cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
				"-readrate", "8", "-user_agent", ua, "-headers", "X-User-Id: "+user+"\r\n",
				"-i", shared, "-c", "copy", "-f", "null", "-")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd
		}
		owner := play("owner")
		time.Sleep(time.Second)
		var sharers []*exec.Cmd
		for i := range 5 {
			sharers = append(sharers, play(fmt.Sprintf("sharer-%d", i)))
			time.Sleep(300 * time.Millisecond)
		}
		owner.Wait()
		for _, s := range sharers {
			s.Wait()
		}

		if got := log.count("owner"); got != segments {
			t.Errorf("the first player was served %d of the %d segments", got, segments)
		}
		whole, refused := 0, 0
		for i := range 5 {
			n := log.count(fmt.Sprintf("sharer-%d", i))
			t.Logf("player %d beside the first: %d of %d segments", i+1, n, segments)
			switch {
			case n == segments:
				whole++
			case n <= 10:
				refused++ // seen within its first few segments, then refused
			}
		}
		if whole != 2 || refused != 3 {
			t.Errorf("of the 5 players beside the first, %d played the whole title and %d were refused early; want 2 and 3 (limit 3)", whole, refused)
		}
		// The players that played beside the first held slots of their
		// own: the user's streams are the stream and its screens.
		if _, n := leaseLeft(p, user); n > 3 {
			t.Errorf("the user holds %d streams with limit 3", n)
		}
	})
}

// TestASharedScreenIsRefusedWithItsOwnError: past the limit, a player on
// a shared stream is answered 429 with the error stream_shared, the limit,
// and the user's screens; the first player is not.
func TestASharedScreenIsRefusedWithItsOwnError(t *testing.T) {
	p := mediaSite(t, "limit 1")
	const user = "one-screen"
	first, second := newSimPlayer(t, p, user, "first"), newSimPlayer(t, p, user, "second")
	if !first.open() {
		t.Fatalf("start: %v", first.refused)
	}
	segs := first.segments[0]
	get := func(sp *simPlayer, u string) (int, errorBody) {
		code, body := sp.get(http.MethodGet, u)
		var e errorBody
		if code != http.StatusOK {
			json.Unmarshal([]byte(body), &e)
		}
		return code, e
	}
	// Two players on two machines, 20 segments apart, fetching turn by
	// turn.
	for i := range 15 {
		if code, e := get(first, segs[20+i]); code != http.StatusOK {
			t.Fatalf("the first player's segment %d: %d %+v", 20+i, code, e)
		}
		code, e := get(second, segs[i])
		if code == http.StatusOK {
			continue
		}
		if code != http.StatusTooManyRequests || e.Error != "stream_shared" || e.Limit == nil || *e.Limit != 1 || len(e.Screens) != 1 {
			t.Fatalf("the second player's refusal: %d %+v", code, e)
		}
		t.Logf("the second player was refused at its segment %d", i)
		return
	}
	t.Fatal("the second player was never refused")
}
