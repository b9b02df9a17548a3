// Package caddymodule is the Caddy side of caddy-streamlimit: the
// stream_limit HTTP handler, its Caddyfile directive and its store modules.
// The lease algorithm itself lives in package lease.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	pathpkg "path"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/streamlimit/caddy-streamlimit/lease"
	"github.com/streamlimit/caddy-streamlimit/manifest"
	"github.com/streamlimit/caddy-streamlimit/playhead"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's options.
const (
	DefaultKey   = "{http.request.header.X-User-Id}"
	DefaultLimit = 3
	DefaultLease = 30 * time.Second
	DefaultZone  = "default"
	// DefaultMaxBuffer is the most media a stream's lease covers beyond
	// its grace: ten minutes, more than any stock player buffers, and
	// little enough that a download does not hold a slot for hours.
	DefaultMaxBuffer = 10 * time.Minute
	// DefaultConfirmWithin is how long a start holds its slot before media
	// confirms it: stock players ask for their first segment within a
	// second or two of the manifest, on a slow network within a few.
	DefaultConfirmWithin = 10 * time.Second
	// MinLease keeps renewals (a third of the lease) from hammering the store.
	MinLease = time.Second
)

// Option values.
const (
	ModeConnection = "connection"
	ModeSession    = "session"

	OnLimitDeny        = "deny"
	OnLimitEvictOldest = "evict_oldest"

	OnStoreErrorAllow = "allow"
	OnStoreErrorDeny  = "deny"

	SharingStrict  = "strict"
	SharingLenient = "lenient"
	SharingOff     = "off"
)

// Handler limits how many streams each user holds at once. It admits a
// request that starts a stream only while the user holds fewer than Limit
// leases in the zone, keeps the lease alive while the stream's requests are
// in flight, and frees it when the stream ends.
type Handler struct {
	// Key is the placeholder that names the user. Default:
	// "{http.request.header.X-User-Id}". An empty expansion is refused (401).
	Key string `json:"key,omitempty"`

	// Limit is how many streams a user may hold at once: a whole number, or a
	// placeholder expanding to one (per-plan limits). Default: 3. A per-user
	// override set through the admin API wins over it.
	Limit Limit `json:"limit,omitempty"`

	// Mode is "connection" (a stream is one request; its slot is freed when
	// the request ends) or "session" (a stream spans the requests that carry
	// its id, and ends on DELETE or when none arrives for Lease). Default:
	// "connection".
	Mode string `json:"mode,omitempty"`

	// Lease is how long a slot outlives its last renewal. Requests in flight
	// renew it every third of Lease. Default: 30s; at least 1s, at most 24h.
	Lease caddy.Duration `json:"lease,omitempty"`

	// MaxBuffer caps how much media a stream's lease covers beyond Lease.
	// With path_token, each segment of a stream's main track that is
	// served extends its lease by the segment's duration (from the
	// manifests it was served), so that a player playing from its buffer
	// keeps its slot, and a stopped one loses it when its media would
	// have run out, plus Lease. Default: 10m.
	MaxBuffer caddy.Duration `json:"max_buffer,omitempty"`

	// ConfirmWithin, in session mode, is how long a stream that has just
	// started holds its slot before media confirms that it plays: a
	// response of the origin with status 2xx or 304 to a request of the
	// stream that is not a manifest, with a media Content-Type (video/*,
	// audio/*, application/mp4, application/octet-stream or none). A start
	// never followed by one (a browser's favicon, a player's probe it
	// abandons) frees its slot then; one whose requests the origin has
	// answered with nothing but an error (a 404 for a mistyped URL) frees
	// it at once. The instance that admitted the stream keeps it
	// unconfirmed; another that serves it renews it as any stream.
	// Default: 10s; negative (Caddyfile: off) turns it off.
	ConfirmWithin caddy.Duration `json:"confirm_within,omitempty"`

	// Sharing, with path_token, is how sure the limiter must be that
	// several players fetch one stream (its tokenized URL passed to other
	// machines) before it counts each as a screen of its own: "strict"
	// (a player taking its turn back from another 4 times within 2
	// minutes), "lenient" (8 times within 3 minutes) or "off". A screen
	// beyond the first takes a slot of its own, and is refused (429
	// stream_shared) when the user has none free; the first plays on. See
	// docs/SECURITY.md. Default: "strict".
	Sharing string `json:"sharing,omitempty"`
	// Zone names the pool of slots: handlers with the same zone share counts.
	// Default: "default".
	Zone string `json:"zone,omitempty"`

	// OnLimit is what a start beyond the limit gets: "deny" (refused) or
	// "evict_oldest" (admitted; the user's oldest stream is revoked).
	// Default: "deny".
	OnLimit string `json:"on_limit,omitempty"`

	// Status is the status code of a refusal at the limit. Default: 429.
	Status int `json:"status,omitempty"`

	// OnStoreError is what a request gets when the store fails or is slower
	// than its timeout: "allow" (passed on, logged) or "deny" (503).
	// Default: "allow", so playback survives a store outage.
	OnStoreError string `json:"on_store_error,omitempty"`

	// DryRun counts and logs what would be refused, and refuses nothing.
	// Refusals it lets through carry the header Stream-Limit-Dry-Run.
	DryRun bool `json:"dry_run,omitempty"`

	// ListPath, when set, is a path where GET lists the caller's own live
	// streams instead of being passed on. Default: off.
	ListPath string `json:"list_path,omitempty"`

	// PathToken, in session mode, answers a start (GET or HEAD) with a
	// redirect to the same URL with the stream's token as a path segment
	// ("/~sl-<id>/") before the file name, so that unmodified HLS and DASH
	// players carry it in every relative URL they resolve. The token is
	// stripped before the request is passed on. Needs mode "session".
	// Default: off.
	PathToken bool `json:"path_token,omitempty"`

	// Client, with path_token, is the placeholder that names a client, so
	// that the same client opening a title again (a probe, then the
	// playback; a reload) continues its stream rather than taking another
	// slot: a device id that an app or an auth layer sends, say. Default:
	// the client's address (client_ip, which honours trusted_proxies) and
	// its User-Agent.
	Client string `json:"client,omitempty"`
	// RewriteHosts, with path_token, are hosts besides the request's own
	// whose absolute URLs in the manifests a stream is served are this
	// site's: they are rewritten to carry the stream's token, as a path
	// relative to the manifest, so the player fetches them through the
	// limiter (an origin that writes its own name, as nginx-vod-module
	// does). "*.example.com" matches any subdomain; a host without a port
	// matches any port. URLs on other hosts (ad and key servers) are left
	// alone. Default: the request's host only.
	RewriteHosts []string `json:"rewrite_hosts,omitempty"`
	// Secret binds stream ids to their users (an id not issued to the
	// user is refused). Default: a random secret kept in the store and
	// shared by every instance using it. Set it (e.g. {env.*}) so that ids
	// survive the loss of the store's data.
	Secret string `json:"secret,omitempty"`

	// LogUser adds the user to log entries. Off by default: user ids are
	// personal data.
	LogUser bool `json:"log_user,omitempty"`

	// StoreRaw is where leases live, a module in the namespace
	// "stream_limit.stores". Default: {"type": "memory"}.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=stream_limit.stores inline_key=type"`

	zone     *zone
	idSecret []byte // the configured Secret, expanded; nil: the store's
	sharing  playhead.Rules
	policy   lease.Policy
	logger   *zap.Logger
	// sampledLog carries what a client can provoke at will (refusals,
	// store failures): the first few per second each, then one in 100.
	sampledLog *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.stream_limit",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and opens (or joins) the zone's store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.sampledLog = h.logger.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 100)
	}))
	if err := initMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	if h.Key == "" {
		h.Key = DefaultKey
	}
	if h.Limit == "" {
		h.Limit = Limit(strconv.Itoa(DefaultLimit))
	}
	if h.Mode == "" {
		h.Mode = ModeConnection
	}
	if h.Lease == 0 {
		h.Lease = caddy.Duration(DefaultLease)
	}
	if h.Zone == "" {
		h.Zone = DefaultZone
	}
	if h.MaxBuffer == 0 {
		h.MaxBuffer = caddy.Duration(DefaultMaxBuffer)
	}
	if h.ConfirmWithin == 0 {
		h.ConfirmWithin = caddy.Duration(DefaultConfirmWithin)
	}
	if h.OnLimit == "" {
		h.OnLimit = OnLimitDeny
	}
	if h.Sharing == "" {
		h.Sharing = SharingStrict
	}
	h.sharing = sharingRules(h.Sharing)
	if h.OnLimit == OnLimitEvictOldest {
		h.policy = lease.EvictOldest
	}
	if h.Status == 0 {
		h.Status = http.StatusTooManyRequests
	}
	if h.OnStoreError == "" {
		h.OnStoreError = OnStoreErrorAllow
	}
	repl := caddy.NewReplacer()
	if h.Secret != "" {
		h.idSecret = []byte(repl.ReplaceAll(h.Secret, ""))
	}
	for i, host := range h.RewriteHosts {
		h.RewriteHosts[i] = repl.ReplaceAll(host, "")
	}
	if h.StoreRaw == nil {
		h.StoreRaw = json.RawMessage(`{"type":"memory"}`)
	}
	// Checked now, not only when Caddy calls Validate after Provision: the
	// zone below is shared with the config still running, and a config that
	// will be refused must not change its settings (its lease, limit,
	// logger) on the way.
	if err := h.Validate(); err != nil {
		return err
	}
	mod, err := ctx.LoadModule(h, "StoreRaw")
	if err != nil {
		return fmt.Errorf("loading store: %v", err)
	}
	store, ok := mod.(StoreModule)
	if !ok {
		return fmt.Errorf("store module %T does not open a lease store", mod)
	}
	h.zone, err = loadZone(h.Zone, store)
	if err != nil {
		return fmt.Errorf("zone %q: opening store: %v", h.Zone, err)
	}
	h.zone.logger.Store(h.logger)
	h.zone.lease.Store(int64(h.Lease))
	if n, err := parseLimit(string(h.Limit)); err == nil {
		h.zone.limit.Store(int64(n))
	}
	if h.zone.storeTimeout > 0 {
		h.checkStore()
	}
	if eventsApp, err := ctx.AppIfConfigured("events"); err == nil {
		if events, ok := eventsApp.(*caddyevents.App); ok {
			var e emitter = func(name string, data map[string]any) { events.Emit(ctx, name, data) }
			h.zone.emitter.Store(&e)
		}
	}
	return nil
}

// checkStore asks a store that does I/O one question at start-up. A store
// that cannot answer is no reason to refuse the config (it may come up
// later, and on_store_error says what happens meanwhile), but with
// on_store_error allow it means no limit at all: say so loudly. The failed
// call also shows in the store_up and store_errors_total metrics.
func (h *Handler) checkStore() {
	ctx, cancel := h.zone.callContext(context.Background())
	defer cancel()
	_, _, err := h.zone.store.Override(ctx, lease.Key{Zone: h.Zone, User: storeProbeUser})
	if err == nil {
		return
	}
	consequence := "every stream is refused (on_store_error deny) until it answers"
	if h.OnStoreError == OnStoreErrorAllow {
		consequence = "every stream is admitted with no limit (on_store_error allow) until it answers"
	}
	h.logger.Error("the stream store does not answer at start-up; "+consequence,
		zap.String("zone", h.Zone), zap.Duration("timeout", h.zone.storeTimeout), zap.Error(err))
}

// storeProbeUser is the user whose limit override the start-up check
// reads (a read, nothing is written): a name with a NUL byte, which no
// HTTP header can carry.
const storeProbeUser = "\x00store-probe"

// Validate rejects a config that cannot work, naming the option at fault.
func (h *Handler) Validate() error {
	switch {
	case h.Mode != ModeConnection && h.Mode != ModeSession:
		return fmt.Errorf("mode: %q is neither %q nor %q", h.Mode, ModeConnection, ModeSession)
	case h.OnLimit != OnLimitDeny && h.OnLimit != OnLimitEvictOldest:
		return fmt.Errorf("on_limit: %q is neither %q nor %q", h.OnLimit, OnLimitDeny, OnLimitEvictOldest)
	case h.OnStoreError != OnStoreErrorAllow && h.OnStoreError != OnStoreErrorDeny:
		return fmt.Errorf("on_store_error: %q is neither %q nor %q", h.OnStoreError, OnStoreErrorAllow, OnStoreErrorDeny)
	case time.Duration(h.Lease) < MinLease:
		return fmt.Errorf("lease: %v is shorter than the minimum %v", time.Duration(h.Lease), MinLease)
	case time.Duration(h.Lease) > lease.MaxTTL:
		return fmt.Errorf("lease: %v is longer than the maximum %v", time.Duration(h.Lease), lease.MaxTTL)
	case h.MaxBuffer < 0 || time.Duration(h.Lease+h.MaxBuffer) > lease.MaxTTL:
		return fmt.Errorf("max_buffer: %v with lease %v is outside 0 to %v", time.Duration(h.MaxBuffer), time.Duration(h.Lease), lease.MaxTTL)
	case h.ConfirmWithin > 0 && time.Duration(h.ConfirmWithin) < MinLease:
		return fmt.Errorf("confirm_within: %v is shorter than the minimum %v", time.Duration(h.ConfirmWithin), MinLease)
	case h.Sharing != SharingStrict && h.Sharing != SharingLenient && h.Sharing != SharingOff:
		return fmt.Errorf("sharing: %q is not %q, %q or %q", h.Sharing, SharingStrict, SharingLenient, SharingOff)
	case h.PathToken && h.Mode != ModeSession:
		return fmt.Errorf("path_token: needs mode %s (in mode %s a stream is one request, with nothing to carry)", ModeSession, h.Mode)
	case h.Status < 400 || h.Status > 599:
		return fmt.Errorf("status: %d is not an HTTP error status (400-599)", h.Status)
	case h.Secret != "" && len(h.idSecret) < 16:
		return fmt.Errorf("secret: at least 16 bytes, got %d (an unset {env.*}?)", len(h.idSecret))
	case h.Client != "" && !h.PathToken:
		return fmt.Errorf("client: needs path_token (it names who opens a title again)")
	case h.RewriteHosts != nil && !h.PathToken:
		return fmt.Errorf("rewrite_hosts: needs path_token (only its manifests are rewritten)")
	case h.ListPath != "" && h.ListPath[0] != '/':
		return fmt.Errorf("list_path: %q must start with /", h.ListPath)
	}
	for _, host := range h.RewriteHosts {
		if host == "" || strings.ContainsAny(host, "/?# ") {
			return fmt.Errorf("rewrite_hosts: %q is not a host (a name or address, with a port or not, no scheme or path)", host)
		}
	}
	return h.Limit.validate()
}

// Cleanup drops this handler's hold on its zone. The zone, its store and
// its live streams stay while any other handler (a reloaded config) uses it.
func (h *Handler) Cleanup() error {
	if h.zone == nil {
		return nil
	}
	_, err := zones.Delete(zoneKey{h.zone.name, h.zone.storeIdentity})
	return err
}

func (h *Handler) session() bool      { return h.Mode == ModeSession }
func (h *Handler) ttl() time.Duration { return time.Duration(h.Lease) }

// confirmWithin is how long a start holds its slot unconfirmed, or 0 when
// starts need no confirmation: off, in connection mode (a stream is its
// request), or when the lease is no longer.
func (h *Handler) confirmWithin() time.Duration {
	if !h.session() || h.ConfirmWithin <= 0 || time.Duration(h.ConfirmWithin) >= h.ttl() {
		return 0
	}
	return time.Duration(h.ConfirmWithin)
}

// terms are what this handler holds a stream it serves to.
func (h *Handler) terms(limit int) streamTerms {
	return streamTerms{ttl: h.ttl(), limit: limit, session: h.session(), maxBuffer: time.Duration(h.MaxBuffer)}
}

// ServeHTTP admits, continues or closes a stream, or refuses the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// The path token is stripped first, whatever happens next: the origin
	// never sees it as a path, not even in a CORS preflight.
	carried, err := takeStreamID(r, h.PathToken)
	if err != nil {
		return h.refuse(w, r, http.StatusBadRequest, errorBody{Error: "bad_stream_id"})
	}
	if carried.token != nil {
		markToken(r, carried.token)
	}
	if isPreflight(r) {
		// CORS preflights are not playback: passed on and counted nowhere,
		// but with the origin's headers only, so that an origin that answers
		// OPTIONS with the file (Go's http.FileServer does) serves no media
		// to a request that took no slot.
		return next.ServeHTTP(&headersOnly{ResponseWriter: w}, r)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	user := repl.ReplaceAll(h.Key, "")
	if user == "" {
		return h.refuse(w, r, http.StatusUnauthorized, errorBody{Error: "missing_user"})
	}
	if len(user) > lease.MaxUserLen {
		return h.refuse(w, r, http.StatusBadRequest, errorBody{Error: "bad_user"})
	}
	key := lease.Key{Zone: h.Zone, User: user}

	id := carried.id
	var known *localStream // the stream's state here, if any: looked up once
	if id != "" && (r.Method == http.MethodDelete || h.session()) {
		if h.PathToken && carried.token == nil && r.Method != http.MethodDelete {
			// With path_token an id is good for its own title only, which
			// only its token proves: a bare id in the header or the query
			// would play anything.
			return h.refuse(w, r, http.StatusNotFound, errorBody{Error: "stream_not_found"})
		}
		known = h.zone.lookup(streamRef{key, id})
		// A token must have been made for the path it came in (its title),
		// and ids carry proof of their owner: one not issued to this user
		// (forged, or another user's) is no stream of theirs, live or
		// lapsed. (A stream known here was checked when it was first seen.)
		ok, err := true, error(nil)
		if t := carried.token; t != nil && (known == nil || !known.boundBefore(*t)) {
			if ok, err = h.bound(r, *t); ok && known != nil {
				known.rememberBound(*t)
			}
		}
		if ok && err == nil && known == nil {
			ok, err = h.verify(r, key, id)
		}
		switch {
		case err != nil && r.Method == http.MethodDelete:
			return h.refuse(w, r, http.StatusServiceUnavailable, errorBody{Error: "store_unavailable"})
		case err != nil:
			// Served under on_store_error as any stream, and held to the
			// user's own limit when its keepalive puts the lease back.
			limit, lerr := h.Limit.resolve(repl)
			if lerr != nil {
				return h.badLimit(w, r, lerr)
			}
			return h.storeFailed(w, r, next, streamRef{key, id}, limit, err)
		case !ok:
			return h.refuse(w, r, http.StatusNotFound, errorBody{Error: "stream_not_found"})
		}
	}
	if r.Method == http.MethodDelete {
		return h.close(w, r, key, id)
	}
	if h.ListPath != "" && r.Method == http.MethodGet && r.URL.Path == h.ListPath {
		return h.list(w, r, key)
	}
	limit, err := h.Limit.resolve(repl)
	if err != nil {
		return h.badLimit(w, r, err)
	}
	if h.session() && id != "" {
		return h.continueStream(w, r, next, streamRef{key, id}, known, limit)
	}
	return h.start(w, r, next, key, limit)
}

// start admits a new stream, or refuses it at the limit.
func (h *Handler) start(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, key lease.Key, limit int) error {
	secret, err := h.idSecretFor(r)
	if err != nil {
		return h.storeFailed(w, r, next, streamRef{key, lease.NewID(lease.NewSecret(), key)}, limit, err)
	}
	tokens := h.PathToken && h.session()
	var again reopenKey
	if tokens && r.Method == http.MethodGet {
		// The same client opening the same title again is the same screen
		// (a player's second open, a probe then the playback, a reload, a
		// player starting over after an error, a DASH player re-reading its
		// MPD by the URL it first asked for): it continues the stream it
		// started, however long ago, while that stream lives here.
		again = reopenKeyOf(r, key.User, h.Client)
		if id, ok := h.zone.reopens.recall(again); ok {
			ref := streamRef{key, id}
			if ls := h.zone.lookup(ref); ls != nil && ls.heldOnceRenewed() && h.stillHeld(r, ref, ls, limit) {
				if h.sharing.Turns > 0 {
					ls.restart(clientHint(r, h.Client))
				}
				return h.answerStart(w, r, next, secret, ref, limit, false)
			}
		}
	}
	ref := streamRef{key, lease.NewID(secret, key)}
	if tokens && r.Method == http.MethodHead {
		// A probe takes no slot: the player's first GET of the tokenized URL
		// admits the stream, as a lapsed stream's return would.
		h.redirectToToken(w, r.URL, secret, ref.id)
		return nil
	}
	policy := h.policy
	if h.DryRun {
		policy = lease.Deny // a dry run evicts nobody
	}
	// A start that media must confirm holds its slot for that window only
	// until then (confirm_within).
	ttl, window := h.ttl(), h.confirmWithin()
	if window > 0 {
		ttl = window
	}
	ctx, cancel := h.storeContext(r)
	d, err := h.zone.store.Acquire(ctx, lease.AcquireRequest{Key: key, ID: ref.id, Limit: limit, TTL: ttl, Policy: policy})
	cancel()
	if err != nil {
		return h.storeFailed(w, r, next, ref, limit, err)
	}
	for _, id := range d.Evicted {
		evicted := streamRef{key, id}
		h.zone.markRevoked(evicted, h.ttl())
		h.zone.recordEnded(evicted, causeEviction)
	}
	if !d.Admitted {
		return h.atLimit(w, r, next, key, d)
	}
	h.zone.recordAdmitted(ref)
	// Known here before its first request is served (a redirected start
	// has none yet): its lease's start, which its release names; and, for
	// a session, what kind of client plays it, for refusals that name the
	// user's screens, and whether media must confirm it.
	ls, _, _ := h.zone.enter(ref, h.terms(limit), true, nil)
	ls.admitted(d.Lease.Started)
	if h.session() {
		ls.describeClient(r.UserAgent())
		if window > 0 {
			ls.awaitPlayback(window)
		}
	}
	if tokens && r.Method == http.MethodGet {
		// Remembered while the stream lives here (the sweep forgets it
		// with the stream), so that a reload an hour in takes it over.
		h.zone.reopens.remember(again, ref.id, lease.MaxTTL)
		return h.answerStart(w, r, next, secret, ref, limit, true)
	}
	return h.serve(w, r, next, ref, limit, true)
}

// stillHeld reports whether a stream a client opens again may go on: not
// revoked here, and, unless the store confirmed its lease within a
// renewal interval, still held in the store. So a stream closed or kicked
// through another instance is not continued on what this instance last
// knew (for a stream with media buffered, that may be a lease old): its
// client starts anew, and needs a free slot. A store that cannot answer
// leaves the stream going on, as it leaves a live stream.
func (h *Handler) stillHeld(r *http.Request, ref streamRef, ls *localStream, limit int) bool {
	if _, revoked := ls.fresh(h.ttl()); revoked {
		return false
	}
	if ls.confirmedWithin(renewEvery(h.ttl())) {
		return true
	}
	ttl := ls.leaseTTL()
	d, err := h.renewFor(r, ref, ttl, limit)
	switch {
	case errors.Is(err, lease.ErrRevoked):
		h.zone.markRevoked(ref, h.ttl())
		return false
	case err != nil:
		ls.renewalFailed(err)
		return true
	case !d.Admitted:
		ls.lost() // lapsed, and the slots are taken
		return false
	}
	ls.confirm(ttl)
	return true
}

// answerStart answers a GET that starts a path_token stream, or opens it
// again. A manifest is fetched and, when it is a master playlist, a VOD
// playlist or a static MPD, served at once, rewritten: every URI in it
// carries the stream, and a player that keeps the credentials of its URL
// only for that URL (VLC) plays on. A live playlist, which the player will
// read again, and any other file are answered with a redirect to the
// tokenized URL, which the player then uses.
func (h *Handler) answerStart(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, secret []byte, ref streamRef, limit int, confirmed bool) error {
	if !isManifest(r.URL.Path) {
		h.redirectToToken(w, r.URL, secret, ref.id)
		return nil
	}
	caddyhttp.SetVar(r.Context(), startVar, true)
	return h.serve(w, r, next, ref, limit, confirmed)
}

// continueStream serves a request that carries a stream id (session mode):
// it renews the lease at most once per renewal interval (beside the
// request while the lease still runs, before it once the lease lapsed),
// re-admits a lapsed stream when a slot is free, and refuses a revoked one. ls is the stream's
// state in this process, or nil.
func (h *Handler) continueStream(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ref streamRef, ls *localStream, limit int) error {
	if r.Method == http.MethodHead && (ls == nil || !ls.held()) {
		// A probe that followed a start's redirect (a HEAD start takes no
		// slot) or of a stream lapsed here: it carries no media, and takes
		// or renews no slot; the origin's headers only.
		return next.ServeHTTP(&headersOnly{ResponseWriter: w}, r)
	}
	if ls != nil {
		fresh, revoked := ls.fresh(h.ttl())
		if revoked {
			return h.refuse(w, r, http.StatusConflict, errorBody{Error: "stream_revoked"})
		}
		if fresh {
			return h.serve(w, r, next, ref, limit, false)
		}
		// One renewal at a time per stream. A request that arrives while
		// another renews (audio beside video, a prefetch, the keepalive)
		// does not ask the store again: while the slot is surely still the
		// stream's it goes on at once (a revocation the renewal finds cuts
		// it), otherwise it waits for that renewal's answer.
		if !ls.renewing.TryLock() {
			if ls.held() {
				return h.serve(w, r, next, ref, limit, false)
			}
			waited := now()
			ls.renewing.Lock()
			if err := ls.failedSince(waited); err != nil {
				ls.renewing.Unlock()
				return h.storeFailed(w, r, next, ref, limit, err)
			}
		}
		fresh, revoked = ls.fresh(h.ttl())
		if fresh || revoked {
			ls.renewing.Unlock()
			return h.continueStream(w, r, next, ref, ls, limit)
		}
		if ls.held() {
			// The lease still runs: the request does not wait on the store.
			// Its renewal runs beside it, and a revocation or a lost slot
			// that it finds cuts the request, as the keepalive's would.
			go h.renewBeside(r, ref, ls, limit)
			return h.serve(w, r, next, ref, limit, false)
		}
		ttl := ls.leaseTTL()
		d, err := h.renewFor(r, ref, ttl, limit)
		switch {
		case err == nil && d.Admitted:
			ls.confirm(ttl)
		case err != nil && !errors.Is(err, lease.ErrRevoked):
			ls.renewalFailed(err)
		}
		ls.renewing.Unlock()
		return h.renewed(w, r, next, ref, limit, d, err)
	}
	d, err := h.renewFor(r, ref, h.ttl(), limit)
	return h.renewed(w, r, next, ref, limit, d, err)
}

// renewBeside renews the lease of a stream that a request continues while
// the request is served; the caller holds ls.renewing, which it releases.
func (h *Handler) renewBeside(r *http.Request, ref streamRef, ls *localStream, limit int) {
	defer ls.renewing.Unlock()
	ctx, cancel := h.storeContext(r)
	defer cancel()
	ctx, ttl := unhurried(ctx, h.ttl(), ls.leaseTTL())
	d, err := h.zone.renew(ctx, ref, ttl, limit)
	switch {
	case err == nil && d.Admitted:
		ls.confirm(ttl)
	case errors.Is(err, lease.ErrRevoked):
		h.zone.markRevoked(ref, h.ttl())
	case err == nil:
		// Its lease had lapsed in the store and others took the slots: its
		// next request asks the store again, and is refused.
		ls.lost()
		ls.cutAll()
	default:
		ls.renewalFailed(err)
	}
}

// renewFor renews the stream a request continues for ttl, bounded by the
// store's timeout.
func (h *Handler) renewFor(r *http.Request, ref streamRef, ttl time.Duration, limit int) (lease.Decision, error) {
	ctx, cancel := h.storeContext(r)
	defer cancel()
	return h.zone.renew(ctx, ref, ttl, limit)
}

// renewed serves or refuses a request after its stream's renewal.
func (h *Handler) renewed(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ref streamRef, limit int, d lease.Decision, err error) error {
	switch {
	case errors.Is(err, lease.ErrRevoked):
		h.zone.markRevoked(ref, h.ttl())
		return h.refuse(w, r, http.StatusConflict, errorBody{Error: "stream_revoked"})
	case err != nil:
		return h.storeFailed(w, r, next, ref, limit, err)
	case !d.Admitted:
		return h.atLimit(w, r, next, ref.key, d)
	}
	return h.serve(w, r, next, ref, limit, true)
}

// serve passes an admitted request on, keeping its stream's lease alive
// while it is in flight and cutting it if the stream is revoked meanwhile.
// In connection mode the stream ends with the request.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ref streamRef, limit int, confirmed bool) (err error) {
	// A request of the stream's media gets a context that a revocation
	// cancels, cutting it. A manifest, under path_token, carries no media
	// and is answered whole once rewritten: it is not cut (the stream's
	// next segment is refused), and is spared that context's cost.
	rewritten := h.PathToken && h.session() && r.Method == http.MethodGet && isManifest(r.URL.Path)
	var cancel context.CancelCauseFunc
	if !rewritten {
		var ctx context.Context
		ctx, cancel = context.WithCancelCause(r.Context())
		r = r.WithContext(ctx)
	}
	ls, req, revoked := h.zone.enter(ref, h.terms(limit), confirmed, cancel)
	if revoked {
		if cancel != nil {
			cancel(nil)
		}
		return h.refuse(w, r, http.StatusConflict, errorBody{Error: "stream_revoked"})
	}
	var aw *answerWriter
	if ls.unconfirmed() {
		// Media confirms the start; errors alone end it (confirm_within).
		t, _ := caddyhttp.GetVar(r.Context(), tokenVar).(*pathToken)
		aw = &answerWriter{ResponseWriter: w, ls: ls, path: r.URL.Path, segment: t != nil && t.scope != scopeFile}
		w = aw
	}
	defer func() {
		// Deferred so that it runs when reverse_proxy aborts with a panic.
		ls.leave(req)
		if aw != nil {
			if r.Context().Err() == nil {
				// An error the origin gave. (A request cut, by a revocation or
				// by its client leaving, was not answered: its window decides.)
				aw.failedWith(err)
			}
			if aw.failed {
				ls.end(func() { h.zone.releaseFor(ref, causeNotPlayed) })
			}
		}
		if cancel != nil {
			cancel(nil)
		}
		if !h.session() {
			if h.zone.storeTimeout > 0 {
				// A store with I/O releases after the response: its round trip
				// (or its timeout, when it is down) must not hold the client.
				h.zone.releaseLater(ls)
			} else {
				ls.end(func() { h.zone.release(ref) })
			}
		}
	}()
	w.Header().Set(StreamIDHeader, ref.id)
	if !h.PathToken || !h.session() || r.Method != http.MethodGet {
		// (A HEAD has no body to rewrite, and no media to play.)
		return next.ServeHTTP(w, r)
	}
	t, _ := caddyhttp.GetVar(r.Context(), tokenVar).(*pathToken)
	if t != nil && t.scope == scopeFile && isProgressive(r.URL.Path) {
		// A progressive file: its bytes are its media, counted as sent
		// also when the response ends partway (the origin dropped it, or
		// the player stopped it to seek: reverse_proxy then aborts with a
		// panic). The player keeps what it read.
		pw := &progressiveWriter{ResponseWriter: w, known: ls.knowsFile()}
		defer ls.playedFile(pw.media)
		return next.ServeHTTP(pw, r)
	}
	if t != nil && t.media > 0 {
		// A segment of the stream's main track: it is one player's, and
		// once it is served the stream's lease covers its media too.
		if answered, err := h.oneScreen(w, r, ls, ref, limit); answered {
			return err
		}
		sw := &statusWriter{ResponseWriter: w}
		err := next.ServeHTTP(sw, r)
		if err == nil && (sw.status >= 200 && sw.status < 300 || sw.status == http.StatusNotModified) {
			// (A 304: the player had the segment; the origin confirmed it.)
			ls.played(t.media)
		}
		return err
	}
	return h.serveRewriting(w, r, next, ls)
}

// answerWriter tells an unconfirmed stream how the origin answered one of
// its requests, when the response's header is written: media (a long
// download too) confirms it at once.
type answerWriter struct {
	http.ResponseWriter
	ls      *localStream
	path    string
	segment bool // the request carried a token for a manifest's segments
	told    bool
	failed  bool // the stream got nothing but errors: its slot goes after this response
}

func (w *answerWriter) WriteHeader(code int) {
	if !w.told && code >= 200 {
		w.told = true
		_, w.failed = w.ls.answered(code, isMedia(w.path, w.Header().Get("Content-Type"), w.segment))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(b []byte) (int, error) {
	if !w.told {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.NewResponseController reach the writer underneath.
func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// failedWith tells the stream of an error the handlers after this one
// returned instead of writing a response (reverse_proxy's 502 when the
// origin cannot be reached).
func (w *answerWriter) failedWith(err error) {
	if w.told || err == nil {
		return
	}
	status := http.StatusInternalServerError
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		status = he.StatusCode
	}
	w.told = true
	_, w.failed = w.ls.answered(status, false)
}

// isMedia reports whether a response is media that confirms a playback:
// not a manifest; a segment a manifest of the stream listed (its token
// says so), a file named as media is, or of a media type (or none, as an
// origin may serve segments). The name counts because the type may not:
// a file server that takes its types from Debian's /etc/mime.types serves
// .ts as text/vnd.trolltech.linguist.
func isMedia(path, contentType string, segment bool) bool {
	if isManifest(path) || manifest.Detect(contentType, path) != manifest.None {
		return false
	}
	if segment || mediaExtensions[strings.ToLower(pathpkg.Ext(path))] {
		return true
	}
	ct, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	ct = strings.TrimSpace(ct)
	switch {
	case ct == "", strings.HasPrefix(ct, "video/"), strings.HasPrefix(ct, "audio/"),
		ct == "application/mp4", ct == "application/octet-stream", ct == "binary/octet-stream":
		return true
	}
	return false
}

// mediaExtensions are the names of media files, segments and whole.
var mediaExtensions = map[string]bool{
	".ts": true, ".m4s": true, ".mp4": true, ".m4v": true, ".m4a": true, ".aac": true, ".ac3": true, ".ec3": true,
	".mp3": true, ".cmfv": true, ".cmfa": true, ".webm": true, ".mkv": true, ".mov": true, ".fmp4": true,
}

// statusWriter notes the status of the response it passes on.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 || w.status < 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.NewResponseController reach the writer underneath.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// close ends the stream a DELETE names, without passing the request on.
func (h *Handler) close(w http.ResponseWriter, r *http.Request, key lease.Key, id string) error {
	var err error
	if id == "" {
		return h.refuse(w, r, http.StatusBadRequest, errorBody{Error: "missing_stream_id"})
	}
	ref := streamRef{key, id}
	// A closed stream is over: its id is revoked, not merely released, so
	// that a request of it still on its way (a player's prefetch, or a
	// player that goes on fetching) gets 409 rather than taking the slot
	// back for a whole lease.
	revoke := func() {
		ctx, cancel := h.storeContext(r)
		err = h.zone.store.Revoke(ctx, key, id, lease.TombstoneTTL(h.ttl()))
		cancel()
	}
	if ls := h.zone.lookup(ref); ls != nil {
		// After the revoke no renewal of it may run.
		ls.end(revoke)
		if err != nil {
			ls.resume()
		} else {
			// Its screens beyond the first go with it.
			for _, screen := range ls.screenIDs() {
				h.zone.releaseFor(streamRef{key, screen}, causeClose)
			}
		}
	} else {
		revoke()
	}
	if err == nil {
		// Revoked here too, as a kick is, whether or not a request of it was
		// seen yet: a request that raced the DELETE (its store call came
		// first) is cut if it got in, and refused if it comes after, instead
		// of being served on a renewal it made before the revoke.
		h.zone.markRevoked(ref, h.ttl())
	}
	switch {
	case errors.Is(err, lease.ErrNotFound):
		return h.refuse(w, r, http.StatusNotFound, errorBody{Error: "stream_not_found"})
	case err != nil:
		h.logger.Error("closing a stream failed", zap.String("zone", h.Zone), zap.String("stream_id", id), zap.Error(err))
		return h.refuse(w, r, http.StatusServiceUnavailable, errorBody{Error: "store_unavailable"})
	}
	h.zone.recordEnded(ref, causeClose)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// list answers GET on list_path with the caller's own live streams.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, key lease.Key) error {
	ctx, cancel := h.storeContext(r)
	defer cancel()
	leases, err := h.zone.store.List(ctx, key)
	if err != nil {
		h.logger.Error("listing streams failed", zap.String("zone", h.Zone), zap.Error(err))
		return h.refuse(w, r, http.StatusServiceUnavailable, errorBody{Error: "store_unavailable"})
	}
	limit, err := h.Limit.resolve(r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer))
	if override, ok, oerr := h.zone.store.Override(ctx, key); oerr == nil && ok {
		limit, err = override, nil
	}
	if err != nil {
		return h.refuse(w, r, http.StatusInternalServerError, errorBody{Error: "bad_limit"})
	}
	return writeJSON(w, http.StatusOK, streamList(limit, leases))
}

// badLimit refuses a request whose limit placeholder gave no usable limit.
func (h *Handler) badLimit(w http.ResponseWriter, r *http.Request, err error) error {
	h.logger.Error("limit placeholder gave no usable limit; refusing the request",
		zap.String("zone", h.Zone), zap.String("limit", string(h.Limit)), zap.Error(err))
	return h.refuse(w, r, http.StatusInternalServerError, errorBody{Error: "bad_limit"})
}

// atLimit refuses a start (or a lapsed stream's return) at the limit;
// dry_run lets it through, marked.
func (h *Handler) atLimit(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, key lease.Key, d lease.Decision) error {
	return h.overLimit(w, r, next, key, d, "stream_limit_exceeded")
}

// overLimit refuses, with the error named, a request the store found the
// user at the limit for: a start, or a screen beyond a stream's first
// (next nil: it is served as it was going to be, in a dry run).
func (h *Handler) overLimit(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, key lease.Key, d lease.Decision, code string) error {
	if h.DryRun {
		metrics.dryRunDenied.WithLabelValues(h.Zone).Inc()
		if ce := h.sampledLog.Check(zapcore.InfoLevel, "dry run: would refuse a stream at the limit"); ce != nil {
			ce.Write(h.logFields(r, zap.Int("limit", d.Limit), zap.Int("active", d.Active))...)
		}
		w.Header().Set("Stream-Limit-Dry-Run", code)
		if next == nil {
			return nil
		}
		return next.ServeHTTP(w, r)
	}
	retry := int(math.Ceil(d.RetryAfter.Seconds()))
	retry = max(retry, 1)
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.stream_limit.limit", d.Limit)
	repl.Set("http.stream_limit.active", d.Active)
	repl.Set("http.stream_limit.retry_after", retry)
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	var screens []screenBody
	for _, l := range d.Held {
		sc := screenBody{Started: l.Started.UTC().Format(time.RFC3339)}
		if ls := h.zone.lookup(streamRef{key, l.ID}); ls != nil {
			sc.Client = ls.clientKind()
		}
		screens = append(screens, sc)
	}
	return h.refuse(w, r, h.Status, errorBody{Error: code, Limit: &d.Limit, Active: &d.Active, Screens: screens})
}

// storeFailed applies on_store_error to a request the store could not decide.
func (h *Handler) storeFailed(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ref streamRef, limit int, err error) error {
	if r.Context().Err() != nil {
		return r.Context().Err() // the client left; nobody to answer
	}
	if ce := h.sampledLog.Check(zapcore.WarnLevel, "stream store failed"); ce != nil {
		ce.Write(h.logFields(r, zap.String("on_store_error", h.OnStoreError), zap.Error(err))...)
	}
	if h.OnStoreError == OnStoreErrorDeny {
		return h.refuse(w, r, http.StatusServiceUnavailable, errorBody{Error: "store_unavailable"})
	}
	// Serve it as a stream all the same: its keepalive keeps trying, and
	// re-establishes the lease once the store answers again.
	return h.serve(w, r, next, ref, limit, false)
}

// logFields are the fields of a log entry about a request: the zone, and
// the user only where log_user allows it.
func (h *Handler) logFields(r *http.Request, fields ...zap.Field) []zap.Field {
	fields = append(fields, zap.String("zone", h.Zone))
	if h.LogUser {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		fields = append(fields, zap.String("user", repl.ReplaceAll(h.Key, "")))
	}
	return fields
}

// storeContext bounds one store call. It is detached from the client so
// that a client leaving mid-call cannot leave a lease nobody knows of.
func (h *Handler) storeContext(r *http.Request) (context.Context, context.CancelFunc) {
	return h.zone.callContext(context.WithoutCancel(r.Context()))
}

// isPreflight reports whether r is a CORS preflight: OPTIONS with the
// headers a browser sends before a cross-origin request. Only those pass
// without a user; any other OPTIONS is a request like the rest (an origin
// may well answer it with the file).
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// headersOnly passes a response's status and headers on and drops its
// body.
type headersOnly struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *headersOnly) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.Header().Del("Content-Length") // the body is not sent
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *headersOnly) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return len(b), nil
}

// Unwrap lets http.NewResponseController reach the writer underneath.
func (w *headersOnly) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
