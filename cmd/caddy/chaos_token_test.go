package main

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/streamlimit/caddy-streamlimit/chaos"
)

// The tok zone's viewers play a VOD title as a stock HLS player does: they
// open its media playlist (the start, answered with the playlist
// rewritten, every segment's URI carrying the stream's token), then fetch
// the segments it names, one for each segment played, keeping a few
// seconds buffered ahead, and send nothing when they stop. A load balancer
// sends each user's requests to one instance while it answers, as
// README advises for the strictest count of shared URLs.

// The title every tok viewer plays: chaosSegments segments of chaosSegment
// of media, each served in chaosSegmentServed.
const (
	chaosSegments      = 8
	chaosSegment       = time.Second
	chaosSegmentServed = 150 * time.Millisecond
	// chaosAhead is how much media a player keeps buffered ahead: it
	// fetches the next segment once less than this is left to play.
	chaosAhead = 2500 * time.Millisecond
	// chaosMaxBuffer is the tok zone's max_buffer: the most media beyond
	// the lease that a stream's served segments hold its slot for.
	chaosMaxBuffer = 8 * time.Second
)

// chaosPlaylist is the titles' media playlist, as a packager writes a VOD
// one.
var chaosPlaylist = func() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n", int(chaosSegment.Seconds()))
	for i := range chaosSegments {
		fmt.Fprintf(&b, "#EXTINF:%.3f,\nseg%d.ts\n", chaosSegment.Seconds(), i)
	}
	b.WriteString("#EXT-X-ENDLIST\n")
	return b.String()
}()

// balancer sends each user's requests to the first instance, in an order
// of the user's own, that answered its last health check (every 200 ms):
// all of a user's players are on one instance but while it fails.
type balancer struct {
	fleet []*chaosInstance
	mu    sync.Mutex
	up    []bool
}

func (r *chaosRun) startBalancer(ctx context.Context) *balancer {
	b := &balancer{fleet: r.fleet, up: make([]bool, len(r.fleet))}
	for i := range b.up {
		b.up[i] = true
	}
	check := &http.Client{Timeout: 300 * time.Millisecond}
	go func() {
		for sleepFor(ctx, 200*time.Millisecond) {
			for i, in := range b.fleet {
				resp, err := check.Get("http://" + in.addr + "/")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				b.mu.Lock()
				b.up[i] = err == nil
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// route is the instance a user's request goes to now.
func (b *balancer) route(user string) *chaosInstance {
	h := fnv.New32a()
	h.Write([]byte(user))
	first := int(h.Sum32() % uint32(len(b.fleet)))
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.fleet {
		if i := (first + k) % len(b.fleet); b.up[i] {
			return b.fleet[i]
		}
	}
	return b.fleet[first]
}

// tokPlayer is one device of a user: a client of its own (its User-Agent;
// every device is on one address) playing titles one after another.
type tokPlayer struct {
	r      *chaosRun
	lb     *balancer
	rng    *rand.Rand
	user   string
	agent  string
	honest bool
}

// tokFetch makes one request of a player: path through the instance the
// balancer picks, with the player's User-Agent and the name of the screen
// it plays (for the origin's log).
func (p *tokPlayer) fetch(path, screen string) (status int, streamID string, body string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.lb.route(p.user).addr+path, nil)
	if err != nil {
		return 0, "", ""
	}
	req.Header.Set("X-User-Id", p.user)
	req.Header.Set("X-Chaos-Stream", screen)
	req.Header.Set("User-Agent", p.agent)
	resp, err := p.r.client.Do(req)
	if err != nil {
		return 0, "", ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && resp.StatusCode == http.StatusOK {
		return 0, "", "" // cut, or its instance went away
	}
	return resp.StatusCode, resp.Header.Get("Stream-Id"), string(b)
}

// segmentURIs are the paths of the segments a media playlist fetched at
// base names, in order.
func segmentURIs(base, playlist string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(playlist))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "/") {
			line = path.Join(path.Dir(base), line)
		}
		out = append(out, line)
	}
	return out
}

// play plays titles until ctx ends. Each playback is drawn from the seed:
// to the title's end, stopped part way, or reloaded part way (the player
// opens its title again: the same client continues its stream). A greedy
// user's first device passes each stream's playlist, as it was given, to
// share, for other machines to play.
func (p *tokPlayer) play(ctx context.Context, n int, share func(owner string, segs []string)) {
	var last chaos.Attempt // the playback before
	for i := 0; ctx.Err() == nil; i++ {
		title := fmt.Sprintf("/p/t%d/index.m3u8", p.rng.IntN(4))
		a := chaos.Attempt{Zone: "tok", User: p.user, Stream: fmt.Sprintf("%s-%d-%d", p.user, n, i), Honest: p.honest, At: time.Now()}
		var body string
		a.Status, a.ID, body = p.fetch(title, a.Stream)
		if a.Status != http.StatusOK {
			p.r.record(a)
			sleepFor(ctx, between(p.rng, 300*time.Millisecond, 800*time.Millisecond))
			continue
		}
		if a.ID == last.ID {
			// The same title again, soon after: the limiter takes it for
			// the same screen opening its title again, and continues the
			// stream, with the media it was served before. (The checker
			// takes the starts of one id for one stream.)
			a.MediaEnd = last.MediaEnd
		}
		segs := segmentURIs(title, body)
		if share != nil {
			share(a.Stream, segs)
		}
		stopAt := len(segs) // plays to the end
		reloadAt := -1
		switch p.rng.IntN(4) {
		case 0:
			stopAt = p.rng.IntN(len(segs))
		case 1:
			reloadAt = 1 + p.rng.IntN(len(segs)-1)
		}
		last = p.playSegments(ctx, a, title, segs, stopAt, reloadAt)
		p.r.record(last)
		sleepFor(ctx, between(p.rng, 0, 500*time.Millisecond))
	}
}

// playSegments fetches a playback's segments from its playlist's, keeping
// chaosAhead buffered, until stopAt, reloading its title at reloadAt; it
// returns the playback as it ended. A refusal ends it (Cut); no answer
// is tried again through the instance the balancer then picks.
func (p *tokPlayer) playSegments(ctx context.Context, a chaos.Attempt, title string, segs []string, stopAt, reloadAt int) chaos.Attempt {
	var buffered time.Time // when what this player holds runs out
	for k := 0; k < stopAt && ctx.Err() == nil; {
		if k == reloadAt {
			reloadAt = -1
			status, id, body := p.fetch(title, a.Stream)
			switch {
			case status == http.StatusOK && id == a.ID:
				segs, buffered = segmentURIs(title, body), time.Time{} // the same stream, continued
			case status == 0:
				continue
			default:
				// Not continued: the playback before it is over, and what
				// the reload got is a start of its own.
				a.Ended = time.Now()
				p.r.record(a)
				a = chaos.Attempt{Zone: "tok", User: p.user, Stream: a.Stream + "r", Honest: p.honest, At: a.Ended, Status: status, ID: id}
				if status != http.StatusOK {
					return a
				}
				segs, buffered = segmentURIs(title, body), time.Time{}
			}
		}
		if wait := ahead(buffered) - chaosAhead; wait > 0 && !sleepFor(ctx, wait) {
			break
		}
		status, _, _ := p.fetch(segs[k], a.Stream)
		switch status {
		case http.StatusOK:
			buffered = time.Now().Add(ahead(buffered) + chaosSegment)
			a.MediaEnd = chaos.Played(a.MediaEnd, time.Now(), chaosSegment, chaosMaxBuffer)
			k++
		case 0:
			sleepFor(ctx, 200*time.Millisecond)
		default:
			a.Cut, a.CutAt, a.Ended = status, time.Now(), time.Now()
			return a
		}
	}
	a.Ended = time.Now() // stopped: a stock player says nothing
	return a
}

// sharer is a machine that was passed a stream's playlist: it plays the
// segments its URIs name, from the first, as the owner's player does. A
// refusal (stream_shared) stops it for a moment; then it tries again, from
// where it was.
func (p *tokPlayer) sharer(ctx context.Context, n int, passed <-chan sharedTitle) {
	for i := 0; ctx.Err() == nil; i++ {
		var t sharedTitle
		select {
		case <-ctx.Done():
			return
		case t = <-passed:
		}
		a := chaos.Attempt{Zone: "tok", User: p.user, Stream: fmt.Sprintf("%s/m%d-%d", t.owner, n, i), Shares: t.owner, At: time.Now()}
		for k := 0; k < len(t.segs) && ctx.Err() == nil; {
			if wait := ahead(a.MediaEnd) - chaosAhead; wait > 0 && !sleepFor(ctx, wait) {
				break
			}
			status, _, _ := p.fetch(t.segs[k], a.Stream)
			if a.Status == 0 {
				a.Status = status
			}
			switch status {
			case http.StatusOK:
				a.MediaEnd = chaos.Played(a.MediaEnd, time.Now(), chaosSegment, chaosMaxBuffer)
				k++
			case 0:
				sleepFor(ctx, 200*time.Millisecond)
			default:
				a.Cut, a.CutAt = status, time.Now()
				sleepFor(ctx, between(p.rng, time.Second, 2*time.Second))
			}
		}
		a.Ended = time.Now()
		p.r.record(a)
	}
}

// sharedTitle is a playlist passed on: the stream it was given to, and
// its segments' URIs.
type sharedTitle struct {
	owner string
	segs  []string
}

// tokViewers starts the tok zone's viewers: honest users whose devices
// each play one title at a time, and a greedy user whose first device
// passes its playlists on to two other machines while two more devices
// play titles of their own.
func (r *chaosRun) tokViewers(ctx context.Context, wg *sync.WaitGroup) {
	lb := r.startBalancer(ctx)
	player := func(user string, n int, honest bool) *tokPlayer {
		return &tokPlayer{r: r, lb: lb, rng: r.rng(fmt.Sprintf("tok %s %d", user, n)), user: user,
			agent: fmt.Sprintf("ChaosPlayer/1.0 (device %d)", n), honest: honest}
	}
	for u := range 2 {
		user := fmt.Sprintf("honest-p%d", u)
		for n := range chaosLimit {
			wg.Go(func() { player(user, n, true).play(ctx, n, nil) })
		}
	}
	const greedy = "greedy-p0"
	passed := make([]chan sharedTitle, 2)
	for m := range passed {
		passed[m] = make(chan sharedTitle, 1)
		wg.Go(func() { player(greedy, 10+m, false).sharer(ctx, m, passed[m]) })
	}
	share := func(owner string, segs []string) {
		for _, c := range passed {
			select {
			case c <- sharedTitle{owner, segs}:
			default: // still playing the last one passed
			}
		}
	}
	wg.Go(func() { player(greedy, 0, false).play(ctx, 0, share) })
	for n := 1; n < chaosLimit; n++ {
		wg.Go(func() { player(greedy, n, false).play(ctx, n, nil) })
	}
}

// ahead is how long until t, or 0 once it has passed (or for no time).
func ahead(t time.Time) time.Duration {
	if d := time.Until(t); d > 0 {
		return d
	}
	return 0
}
