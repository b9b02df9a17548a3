package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// The two suites of docs/GUARANTEES.md ("Measured: honest viewers and
// sharers"): players simulated over real HTTP, through a real Caddy, to
// the test media's ABR title (2 renditions of 45 segments of 2 s), at 50
// times the speed of the media (a segment every 40 ms): what the limiter
// sees of a player is the order of its fetches, which the speed keeps.

// suitePace is how long a simulated player takes to play a 2 s segment.
const suitePace = 40 * time.Millisecond

// simPlayer is one simulated player on one device.
type simPlayer struct {
	t      *testing.T
	p      *proxy
	user   string
	device string // its User-Agent
	client *http.Client
	// variants are the tokenized URLs of the renditions' playlists its
	// last open was given, and segments their segments' URLs.
	variants []string
	segments [][]string
	refused  []string // what it was refused, and why
}

func newSimPlayer(t *testing.T, p *proxy, user, device string) *simPlayer {
	sp := &simPlayer{t: t, p: p, user: user, device: device}
	sp.newNetwork()
	return sp
}

// newNetwork is a network change: new connections from then on.
func (sp *simPlayer) newNetwork() { sp.client = &http.Client{Transport: &http.Transport{}} }

func (sp *simPlayer) get(method, u string) (int, string) {
	req, _ := http.NewRequest(method, u, nil)
	req.Header.Set("X-User-Id", sp.user)
	req.Header.Set("User-Agent", sp.device)
	resp, err := sp.client.Do(req)
	if err != nil {
		sp.refused = append(sp.refused, fmt.Sprintf("%s %s: %v", method, u, err))
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		sp.refused = append(sp.refused, fmt.Sprintf("%s %s: %d %s", method, u, resp.StatusCode, b))
	}
	return resp.StatusCode, string(b)
}

// open opens the title (a start, or the same device opening it again) and
// reads its renditions' playlists.
func (sp *simPlayer) open() bool {
	master := sp.p.url("/renditions/master.m3u8")
	code, body := sp.get(http.MethodGet, master)
	if code != http.StatusOK {
		return false
	}
	sp.variants, sp.segments = nil, nil
	base, _ := url.Parse(master)
	for _, line := range uriLines(body) {
		ref, _ := url.Parse(line)
		sp.variants = append(sp.variants, base.ResolveReference(ref).String())
	}
	for _, v := range sp.variants {
		code, body := sp.get(http.MethodGet, v)
		if code != http.StatusOK {
			return false
		}
		vb, _ := url.Parse(v)
		var segs []string
		for _, line := range uriLines(body) {
			ref, _ := url.Parse(line)
			segs = append(segs, vb.ResolveReference(ref).String())
		}
		sp.segments = append(sp.segments, segs)
	}
	return len(sp.segments) > 0
}

func uriLines(body string) []string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// TestHonestViewersAreNeverRefused: one user, limit 3, three devices, each
// playing the ABR title for 10 minutes of media as players do: ABR
// switches, seeks back and forward, retries, network changes, reloads,
// a probe (HEAD) before a reload, and a new start from the beginning at
// the end of the title. Not one request is refused. Both stores.
func TestHonestViewersAreNeverRefused(t *testing.T) {
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		p := mediaSite(t, "limit 3\n"+storeBlock)
		const user = "family"
		const media = 10 * time.Minute
		counts := map[string]int{}
		seed := map[string]uint64{"memory": 14, "redis": 16}[store] // two of the seeds tried (14 to 22: all 0)
		var mu sync.Mutex
		var wg sync.WaitGroup
		var players []*simPlayer
		for d, device := range []string{"living-room-tv", "phone", "laptop"} {
			sp := newSimPlayer(t, p, user, device)
			players = append(players, sp)
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(d), seed))
				if !sp.open() {
					return
				}
				note := func(what string) {
					mu.Lock()
					counts[what]++
					mu.Unlock()
				}
				rendition, i := 0, 0
				for played := time.Duration(0); played < media; played += 2 * time.Second {
					switch roll := rng.IntN(100); {
					case roll < 8: // ABR switch
						rendition = (rendition + 1) % len(sp.segments)
						note("ABR switches")
					case roll < 10: // seek
						i = rng.IntN(len(sp.segments[rendition]))
						note("seeks")
					case roll < 13: // the segment again: a retry
						i = max(i-1, 0)
						note("retries")
					case roll < 15: // Wi-Fi to mobile: new connections, the segment again
						sp.newNetwork()
						i = max(i-1, 0)
						note("network changes")
					case roll < 16: // a reload, after a probe
						sp.get(http.MethodHead, p.url("/renditions/master.m3u8"))
						if !sp.open() {
							return
						}
						i = 0
						note("reloads (with a probe first)")
					}
					if i >= len(sp.segments[rendition]) {
						// The title ended: the device plays it again.
						if !sp.open() {
							return
						}
						i = 0
						note("plays from the start")
					}
					sp.get(http.MethodGet, sp.segments[rendition][i])
					i++
					time.Sleep(suitePace)
				}
			}()
		}
		wg.Wait()
		wrongful := 0
		for _, sp := range players {
			wrongful += len(sp.refused)
			for _, r := range sp.refused[:min(len(sp.refused), 3)] {
				t.Errorf("%s was refused: %s", sp.device, r)
			}
		}
		t.Logf("3 devices, %v of media each; %v; wrongful refusals: %d", media, counts, wrongful)
		if _, n := leaseLeft(p, user); n != 3 {
			t.Errorf("the user holds %d streams after playing on 3 devices", n)
		}
	})
}

// TestSharersNeverOutnumberTheLimit: one user, limit 3, plays the ABR
// title on one device, and 1, 2, ... 10 other machines play it too,
// starting a moment apart: every other one with the playlist URL the
// first device's player was given (a shared stream), the rest opening the
// title themselves with the user's credentials (a shared account). The
// first device plays the whole title; at most 3 players do; every other is
// refused within its first 10 segments; in the title's second half, never
// more than 3 are served. Both stores.
func TestSharersNeverOutnumberTheLimit(t *testing.T) {
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		p := mediaSite(t, "limit 3\n"+storeBlock)
		for extra := 1; extra <= 10; extra++ {
			t.Run(fmt.Sprintf("%d extra", extra), func(t *testing.T) {
				user := fmt.Sprintf("sharing-%d", extra)
				owner := newSimPlayer(t, p, user, "owner")
				if !owner.open() {
					t.Fatalf("open: %v", owner.refused)
				}
				shared := owner.segments[0]
				players := []*simPlayer{owner}
				for k := range extra {
					players = append(players, newSimPlayer(t, p, user, fmt.Sprintf("machine-%d", k)))
				}
				served := make([][]bool, len(players))
				var wg sync.WaitGroup
				for k, sp := range players {
					served[k] = make([]bool, len(shared))
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(time.Duration(k) * 3 * suitePace) // each gets the URL a moment later
						segs := shared
						if k%2 == 0 && k > 0 {
							// A shared account: this machine opens the title itself.
							if !sp.open() {
								return // refused at the limit
							}
							segs = sp.segments[0]
						}
						for i, seg := range segs {
							code, _ := sp.get(http.MethodGet, seg)
							served[k][i] = code == http.StatusOK
							time.Sleep(suitePace)
						}
					}()
				}
				wg.Wait()
				whole, lateMost := 0, 0
				for k := range players {
					n := 0
					for _, ok := range served[k] {
						if ok {
							n++
						}
					}
					if n == len(shared) {
						whole++
					} else if n > 10 {
						t.Errorf("player %d beyond the limit was served %d segments", k, n)
					}
				}
				for i := len(shared) / 2; i < len(shared); i++ {
					at := 0
					for k := range players {
						if served[k][i] {
							at++
						}
					}
					lateMost = max(lateMost, at)
				}
				if !allTrue(served[0]) {
					t.Error("the first player was refused")
				}
				if want := min(extra+1, 3); whole != want || lateMost > 3 {
					t.Errorf("%d players played the whole title (want %d), at most %d at once in its second half (limit 3)", whole, want, lateMost)
				}
				t.Logf("%d players: %d played the title, at most %d at once in its second half", extra+1, whole, lateMost)
			})
		}
	})
}

func allTrue(b []bool) bool {
	for _, v := range b {
		if !v {
			return false
		}
	}
	return true
}

// TestAReloadReplacesTheOldPlayer: at the limit, a page is reloaded while
// its old player still fetches (an old tab left playing). The reload
// continues the stream at once; once its player has played two segments,
// the old player's next fetches get 409 stream_replaced, naming the screen
// that took its place, and the reloaded one plays on. Both stores.
func TestAReloadReplacesTheOldPlayer(t *testing.T) {
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		p := mediaSite(t, "limit 1\n"+storeBlock)
		const user, browser = "reloader", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
		old := newSimPlayer(t, p, user, browser)
		if !old.open() {
			t.Fatalf("open: %v", old.refused)
		}
		for i := range 10 {
			old.get(http.MethodGet, old.segments[0][i])
		}
		reloaded := newSimPlayer(t, p, user, browser)
		if !reloaded.open() {
			t.Fatalf("the reload at the limit: %v", reloaded.refused)
		}
		replacedAt := -1
		for i := range 10 {
			if code, _ := reloaded.get(http.MethodGet, reloaded.segments[0][i]); code != http.StatusOK {
				t.Fatalf("the reloaded player's segment %d: %v", i, reloaded.refused)
			}
			code, body := old.get(http.MethodGet, old.segments[0][10+i])
			if code == http.StatusOK {
				continue
			}
			var e errorBody
			json.Unmarshal([]byte(body), &e)
			if code != http.StatusConflict || e.Error != "stream_replaced" || len(e.Screens) != 1 || e.Screens[0].Client != "Chrome on Linux" {
				t.Fatalf("the old player's refusal: %d %s", code, body)
			}
			if replacedAt < 0 {
				replacedAt = i
			}
		}
		if replacedAt < 0 || replacedAt > 3 {
			t.Fatalf("the old player was replaced after %d of the reloaded player's segments, want within 3", replacedAt)
		}
		t.Logf("the old player got 409 stream_replaced at its fetch beside the reloaded player's segment %d", replacedAt)
	})
}
