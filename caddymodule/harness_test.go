package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// The end-to-end tests run a real Caddy in this process, in front of a real
// origin, and talk to it with real HTTP clients. Caddy is one per process,
// so these tests do not run in parallel.

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "streamlimit-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Setenv("XDG_DATA_HOME", dir)
	code := m.Run()
	caddy.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newOrigin is the upstream video server of the tests. It serves, beside
// origintest.Default (a trickle for /slow/, "ok <path>" otherwise):
//
//	/media/... the committed demo media (HLS, DASH, MP4), with Range support
//	/idle/...  one chunk, then nothing until the client leaves
//	/cut/...   a few bytes, then the connection dies mid-body
func newOrigin(t testing.TB) *origintest.Origin {
	media := http.StripPrefix("/media", http.FileServer(http.Dir("../demo/media")))
	return origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/media/"):
			media.ServeHTTP(w, r)
		case strings.Contains(r.URL.Path, "/idle/"):
			// A long stream that costs no CPU.
			w.Write([]byte("x"))
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		case strings.Contains(r.URL.Path, "/cut/"):
			w.Header().Set("Content-Length", "100000")
			w.Write(bytes.Repeat([]byte{'x'}, 1000))
			http.NewResponseController(w).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			origintest.Default(w, r)
		}
	}))
}

// proxy is a running Caddy under test.
type proxy struct {
	t       testing.TB
	globals string              // extra global options
	patch   func([]byte) []byte // edits the adapted JSON before loading
	addr    string              // host:port of the site
	admin   string              // host:port of the admin endpoint
	origin  *origintest.Origin
}

// startCaddy runs a Caddyfile site body (with {upstream} standing for the
// origin) in a real Caddy listening on a free port.
func startCaddy(t testing.TB, site string) *proxy {
	t.Helper()
	return startCaddyWith(t, "", site)
}

// startCaddyWith is startCaddy with extra global options.
func startCaddyWith(t testing.TB, globals, site string) *proxy {
	t.Helper()
	p := &proxy{t: t, origin: newOrigin(t), globals: globals}
	p.addr = loopback.Addr(t)
	p.admin = loopback.Addr(t)
	p.load(site)
	t.Cleanup(func() { caddy.Stop() })
	return p
}

// caddyfile wraps a site body in the global options the tests need.
func (p *proxy) caddyfile(site string) string {
	site = strings.ReplaceAll(site, "{upstream}", p.origin.Addr)
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	skip_install_trust
	grace_period 10s
	log {
		output discard
	}
	# Tests tell devices apart by X-Forwarded-For (one address each).
	servers {
		trusted_proxies static 127.0.0.0/8 ::1
	}
%s
}
http://%s {
%s
}
`, p.admin, p.globals, p.addr, site)
}

func adapt(t testing.TB, caddyfile string) []byte {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "formatted") {
			t.Logf("adapt warning: %s", w.Message)
		}
	}
	return cfg
}

// load replaces the running config; the first load starts Caddy.
func (p *proxy) load(site string) {
	p.t.Helper()
	cfg := adapt(p.t, p.caddyfile(site))
	if p.patch != nil {
		cfg = p.patch(cfg)
	}
	if err := caddy.Load(cfg, true); err != nil {
		p.t.Fatalf("loading config: %v", err)
	}
}

// reload sends a config through the admin API, as an operator would. It
// forces a reload even of an unchanged config, which Caddy would skip.
func (p *proxy) reload(site string) {
	p.t.Helper()
	cfg := adapt(p.t, p.caddyfile(site))
	if p.patch != nil {
		cfg = p.patch(cfg)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.admin+"/load", bytes.NewReader(cfg))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		p.t.Fatalf("POST /load: %s: %s", resp.Status, b)
	}
	// A connection accepted while the old server hands over may be closed
	// unanswered; wait until the new config answers.
	eventually(p.t, "the reloaded config answers", func() bool {
		r, err := client.Do(mustRequest(http.MethodOptions, p.url("/")))
		if err != nil {
			return false
		}
		r.Body.Close()
		return true
	})
}

func mustRequest(method, url string) *http.Request {
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return r
}

func (p *proxy) url(path string) string { return "http://" + p.addr + path }

// client makes plain requests; no connection reuse hides a slot.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

// do sends one request with a user header (none when user is "") and
// returns the response with its body read.
func (p *proxy) do(method, path, user string, hdr ...string) (*http.Response, string) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.url(path), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("X-User-Id", user)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	// A connection reset while a config starts or hands over: a GET is
	// safe to send again, as a player would.
	for attempt := 2; err != nil && attempt <= 3 && (method == http.MethodGet || method == http.MethodHead); attempt++ {
		time.Sleep(100 * time.Millisecond)
		resp, err = client.Do(req)
	}
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// liveStream is a streaming response held open by a client.
type liveStream struct {
	resp   *http.Response
	cancel func()
	done   chan error // the body's read error when the stream ends
}

// open starts a request whose body keeps streaming; it returns once the
// response headers arrive. The body is drained in the background.
func (p *proxy) open(path, user string, hdr ...string) *liveStream {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.url(path), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("X-User-Id", user)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	tr := &http.Transport{DisableKeepAlives: true}
	var resp *http.Response
	var cancel func()
	// A connection accepted just as a reloaded config hands over may be
	// closed unanswered: try again, as a player would.
	for attempt := 1; ; attempt++ {
		var ctxReq *http.Request
		ctxReq, cancel = withCancel(req)
		resp, err = (&http.Client{Transport: tr}).Do(ctxReq)
		if err == nil {
			break
		}
		cancel()
		if attempt == 3 {
			p.t.Fatalf("open %s: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s := &liveStream{resp: resp, cancel: func() { cancel(); tr.CloseIdleConnections() }, done: make(chan error, 1)}
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s.done <- err
	}()
	p.t.Cleanup(s.cancel)
	return s
}

// eventually retries check until it holds, for at most a generous bound;
// the bound only keeps a broken build from hanging, it asserts no speed.
func eventually(t testing.TB, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func decodeJSON(t testing.TB, body string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("body is not JSON: %v: %q", err, body)
	}
	return m
}

func withCancel(req *http.Request) (*http.Request, func()) {
	ctx, cancel := context.WithCancel(req.Context())
	return req.WithContext(ctx), cancel
}

func caddyAdapt(caddyfile string) ([]byte, []caddyconfig.Warning, error) {
	return caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
}

// advance moves the clock of the handler and the memory store forward, as
// if d had passed; the test's end puts it back.
func advance(t testing.TB, d time.Duration) {
	if clockOffset.Load() == 0 {
		t.Cleanup(func() { clockOffset.Store(0) })
	}
	clockOffset.Add(int64(d))
}

// onEachStore runs f as a subtest on the memory store and on a real
// redis-server, with the store block of a stream_limit that uses it.
func onEachStore(t *testing.T, f func(t *testing.T, store, storeBlock string)) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			block := "store memory"
			if store == "redis" {
				block = fmt.Sprintf("store redis {\n\t\t\t\taddress %s\n\t\t\t}", redistest.Start(t).Addr)
			}
			f(t, store, block)
		})
	}
}
