package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// What the player matrix reads to judge a client: Caddy's access log (what
// the proxy answered, and to which stream), the URIs the origin was asked
// for, and the user's live streams over time.

// proxyEntry is one request as Caddy's access log has it.
type proxyEntry struct {
	TS       float64 `json:"ts"`       // when the response ended, in Unix seconds
	Duration float64 `json:"duration"` // seconds
	Status   int     `json:"status"`
	Request  struct {
		Method string `json:"method"`
		URI    string `json:"uri"`
	} `json:"request"`
	RespHeaders http.Header `json:"resp_headers"`
}

// started is when the request arrived.
func (e proxyEntry) started() time.Time {
	return time.Unix(0, int64(math.Round((e.TS-e.Duration)*1e9)))
}

func (e proxyEntry) streamID() string { return e.RespHeaders.Get(StreamIDHeader) }

// refused reports whether the proxy turned the request away. The origin's
// own 404 (a file that does not exist) is not a refusal: some demuxers ask
// for one segment past the end of a DASH title whatever is in front of the
// origin. The limiter's refusals are JSON; basic_auth's 401 is not, and
// counts.
func (e proxyEntry) refused() bool {
	if e.Status < 400 {
		return false
	}
	return e.Status != http.StatusNotFound || strings.HasPrefix(e.RespHeaders.Get("Content-Type"), "application/json")
}

// readProxyLog reads the access log and keeps the requests for paths under
// prefix.
func readProxyLog(t *testing.T, file, prefix string) []proxyEntry {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("reading Caddy's access log: %v", err)
	}
	defer f.Close()
	var entries []proxyEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var e proxyEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // a line still being written
		}
		if strings.HasPrefix(e.Request.URI, prefix) {
			entries = append(entries, e)
		}
	}
	slices.SortStableFunc(entries, func(a, b proxyEntry) int { return a.started().Compare(b.started()) })
	return entries
}

// tokenText matches a stream's token in a URI, to shorten it to its id's
// first 8 characters in a report.
var tokenText = regexp.MustCompile(`(~sl-|stream_id=)([0-9a-f]{8})[0-9a-f-]*(\.[A-Za-z0-9_.-]*)?`)

// describe lists entries one a line, with the time since t0, for a report.
func describe(entries []proxyEntry, t0 time.Time) string {
	var b strings.Builder
	for _, e := range entries {
		id := e.streamID()
		if len(id) > 8 {
			id = " [" + id[:8] + "]"
		}
		fmt.Fprintf(&b, "\n\t%+7.3fs %d %s %s%s", e.started().Sub(t0).Seconds(), e.Status, e.Request.Method,
			tokenText.ReplaceAllString(e.Request.URI, "$1$2…"), id)
	}
	return b.String()
}

// statusCounts sums entries up by status: "307×1 200×2 206×44".
func statusCounts(entries []proxyEntry) string {
	var order []int
	n := map[int]int{}
	for _, e := range entries {
		if n[e.Status] == 0 {
			order = append(order, e.Status)
		}
		n[e.Status]++
	}
	var parts []string
	for _, s := range order {
		parts = append(parts, fmt.Sprintf("%d×%d", s, n[s]))
	}
	return strings.Join(parts, " ")
}

// uriOrigin serves the test media and keeps every request URI, query
// included, that reached it: origintest's books keep paths only, and a
// token could leak in a query too.
type uriOrigin struct {
	*origintest.Origin
	mu   sync.Mutex
	uris []string
}

func newURIOrigin(t *testing.T, dir string) *uriOrigin {
	o := &uriOrigin{}
	media := testmedia.Origin(dir)
	o.Origin = origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.uris = append(o.uris, r.URL.RequestURI())
		o.mu.Unlock()
		media.ServeHTTP(w, r)
	}))
	return o
}

// under lists the URIs asked for under prefix.
func (o *uriOrigin) under(prefix string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, u := range o.uris {
		if strings.HasPrefix(u, prefix) {
			out = append(out, u)
		}
	}
	return out
}

// viewer is whom a player plays as: a user header or, for a player that
// cannot set one, basic_auth credentials in the URL.
type viewer struct {
	user     string
	password string // basic_auth's; "" for the X-User-Id header
}

func (v viewer) identify(r *http.Request) {
	if v.password != "" {
		r.SetBasicAuth(v.user, v.password)
	} else {
		r.Header.Set("X-User-Id", v.user)
	}
}

// url is the address a player of the viewer opens for path.
func (v viewer) url(p *proxy, path string) string {
	if v.password != "" {
		return "http://" + v.user + ":" + v.password + "@" + p.addr + path
	}
	return p.url(path)
}

// held counts the viewer's live streams (list_path /streams). It returns
// an error rather than failing, since it runs beside the subtests.
func (v viewer) held(p *proxy) (int, error) {
	req, err := http.NewRequest(http.MethodGet, p.url("/streams"), nil)
	if err != nil {
		return 0, err
	}
	v.identify(req)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("list: %s", resp.Status)
	}
	var list struct {
		Streams []json.RawMessage `json:"streams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return 0, err
	}
	return len(list.Streams), nil
}

// heldSample is the viewer's count of live streams at one moment.
type heldSample struct {
	at time.Time
	n  int
}

// heldWatch samples a viewer's count of live streams five times a second, so
// that a second slot, or a slot lost while the player still plays, is seen
// however briefly it lasts.
type heldWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples []heldSample
	err     error
}

func watchHeld(p *proxy, v viewer) *heldWatch {
	w := &heldWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			n, err := v.held(p)
			w.mu.Lock()
			if err != nil {
				w.err = err
			} else {
				w.samples = append(w.samples, heldSample{time.Now(), n})
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// last is the latest count, or -1 before the first.
func (w *heldWatch) last() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.samples) == 0 {
		return -1
	}
	return w.samples[len(w.samples)-1].n
}

// halt stops the sampling and returns the samples.
func (w *heldWatch) halt() ([]heldSample, error) {
	close(w.stop)
	<-w.done
	return w.samples, w.err
}

// admittedRun is the label of the playback whose start was admitted
// first, or "".
func admittedRun(entries []proxyEntry) string {
	for _, e := range entries {
		if e.streamID() != "" {
			return runLabel(e.Request.URI)
		}
	}
	return ""
}

// runLabel is the run=<label> of a URI, or "".
func runLabel(uri string) string {
	_, after, ok := strings.Cut(uri, "run=")
	if !ok {
		return ""
	}
	label, _, _ := strings.Cut(after, "&")
	return label
}

// streamIDs maps each stream id the proxy gave to the label of the
// playback whose start it answered ("" when it came otherwise).
func streamIDs(entries []proxyEntry) map[string]string {
	ids := map[string]string{}
	for _, e := range entries {
		if id := e.streamID(); id != "" {
			if _, seen := ids[id]; !seen {
				ids[id] = runLabel(e.Request.URI)
			}
		}
	}
	return ids
}

// admissionOf is when the labelled playback's start was admitted, or the
// zero time.
func admissionOf(entries []proxyEntry, label string) time.Time {
	for _, e := range entries {
		if e.streamID() != "" && runLabel(e.Request.URI) == label {
			return e.started()
		}
	}
	return time.Time{}
}

// ofRun reports whether a request is the labelled playback's: it carries
// the label (a request without a token) or its stream id.
func ofRun(e proxyEntry, label, id string) bool {
	return runLabel(e.Request.URI) == label || (id != "" && strings.Contains(e.Request.URI, id))
}

// refusalTo is the first request of the labelled playback, or of the
// stream its start was admitted as, that the proxy refused; or nil.
func refusalTo(entries []proxyEntry, label string) *proxyEntry {
	id := ""
	for sid, l := range streamIDs(entries) {
		if l == label {
			id = sid
		}
	}
	for i, e := range entries {
		if e.refused() && ofRun(e, label, id) {
			return &entries[i]
		}
	}
	return nil
}

// refusalOf is the first request of the labelled playback refused with
// 429, or nil.
func refusalOf(entries []proxyEntry, label string) *proxyEntry {
	for i, e := range entries {
		if e.Status == http.StatusTooManyRequests && runLabel(e.Request.URI) == label {
			return &entries[i]
		}
	}
	return nil
}

// lapsedWhile is the first moment after from and before stopped at which
// the viewer held no stream, or the zero time (also when from is).
func lapsedWhile(samples []heldSample, from, stopped time.Time) time.Time {
	if from.IsZero() {
		return time.Time{}
	}
	for _, s := range samples {
		if s.at.After(from) && s.at.Before(stopped) && s.n == 0 {
			return s.at
		}
	}
	return time.Time{}
}

// firstMedia is when the stream's first media response ended: a success
// for a path with its token (a segment, or a progressive file); or the
// zero time.
func firstMedia(entries []proxyEntry, id string) time.Time {
	for _, e := range entries {
		if id != "" && e.Status < 300 && strings.Contains(e.Request.URI, PathTokenPrefix+id) {
			return e.started().Add(time.Duration(e.Duration * float64(time.Second)))
		}
	}
	return time.Time{}
}

func lastHeld(samples []heldSample) int {
	if len(samples) == 0 {
		return -1
	}
	return samples[len(samples)-1].n
}

// describeHeld lists the changes of the count: "+0.1s 0, +0.4s 1, ...".
func describeHeld(samples []heldSample, t0 time.Time) string {
	var parts []string
	prev := -1
	for _, s := range samples {
		if s.n != prev {
			parts = append(parts, fmt.Sprintf("%+.1fs %d", s.at.Sub(t0).Seconds(), s.n))
			prev = s.n
		}
	}
	return strings.Join(parts, ", ")
}
