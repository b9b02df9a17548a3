package caddymodule

import (
	"net"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A player often opens the URL it was given more than once for one
// playback: mpv reads a playlist through its own stream layer, then its
// demuxer opens the URL again; streamlink reads a master playlist to
// choose a quality, then opens it again to play; ffmpeg's DASH demuxer
// reads its MPD again by the URL it first asked for. And a viewer starts
// their title over: a page reload, a player that gives up after an error
// and opens the URL anew. Either is the same screen, not another: a start
// of the title by the same client whose stream still lives here continues
// that stream, so a viewer at the limit who reloads plays again at once.
// The client is told apart by its address and User-Agent (what such
// players send alike on both opens; two devices of one model behind one
// address playing the same title count as one), or by what the client
// option names (a device id an app or auth layer sends). A start is
// remembered while its stream lives here.

// maxReopens bounds the starts a zone remembers here: one client starting
// many titles cannot grow this process without end. Past it, starts are
// not remembered (a re-open of one of them is then a start of its own).
const maxReopens = 100_000

// reopenKey names one client's start of one title.
type reopenKey struct {
	user, path, client, agent string
}

type reopen struct {
	id    string
	until time.Time
}

// reopens remembers a zone's recent starts by client and title.
type reopens struct {
	mu sync.Mutex
	m  map[reopenKey]reopen
}

// reopenKeyOf is the key of a start of r's path by r's client, for user:
// the client is what the client placeholder names, or by default its
// address (client_ip, which honours trusted_proxies) and User-Agent.
func reopenKeyOf(r *http.Request, user, clientPlaceholder string) reopenKey {
	k := reopenKey{user: user, path: path.Clean(r.URL.Path)}
	k.client, k.agent = clientOf(r, clientPlaceholder)
	return k
}

// clientOf names the client a request came from: the client placeholder's
// expansion, or else its address and User-Agent.
func clientOf(r *http.Request, clientPlaceholder string) (client, agent string) {
	if clientPlaceholder != "" {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		return repl.ReplaceAll(clientPlaceholder, ""), ""
	}
	client, _ = caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if client == "" {
		client, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	return client, r.UserAgent()
}

// remember notes that k started stream id, for window.
func (o *reopens) remember(k reopenKey, id string, window time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[reopenKey]reopen)
	}
	if _, ok := o.m[k]; !ok && len(o.m) >= maxReopens {
		return
	}
	o.m[k] = reopen{id: id, until: now().Add(window)}
}

// recall returns the stream k started within its window, if any.
func (o *reopens) recall(k reopenKey) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.m[k]
	if !ok || now().After(e.until) {
		return "", false
	}
	return e.id, true
}

// forget drops the starts whose window has passed, and those of streams
// gone from this process.
func (o *reopens) forget(t time.Time, gone func(user, id string) bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, e := range o.m {
		if t.After(e.until) || gone(k.user, e.id) {
			delete(o.m, k)
		}
	}
}
