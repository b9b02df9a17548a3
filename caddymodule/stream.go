package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/streamlimit/caddy-streamlimit/lease"
	"github.com/streamlimit/caddy-streamlimit/playhead"
)

// localStream is this process's view of one stream: the requests in flight
// (to keep its lease alive and to cut them when it is revoked) and when the
// store last confirmed its lease (to coalesce renewals).
type localStream struct {
	ref  streamRef
	zone *zone

	mu        sync.Mutex
	terms     streamTerms    // those of the request that entered last
	requests  []*liveRequest // in flight; nil when none (most of a stream's life)
	confirmed time.Time      // when the store last confirmed the lease
	started   time.Time      // the lease's start in the store, when admitted here (its release names it whole)
	// storeUntil is when the lease the store last confirmed lapses, and
	// mediaEnd when the media the stream has been served here would have
	// played out: a renewal carries the lease to mediaEnd plus the grace.
	storeUntil, mediaEnd time.Time
	// fileDuration is, for a progressive file, its playing time, once
	// read from its header.
	fileDuration time.Duration
	// tokens, under path_token, saves work on the stream's next requests;
	// made by the first that needs it.
	tokens *tokenCache
	// window, for a stream admitted here under confirm_within, is how long
	// it holds its slot at a time until media confirms that it plays
	// (playing); confirmBy is when the current window ends. served is set
	// once the origin has answered one of its requests with a success: a
	// stream that got nothing but errors frees at once. renewNow asks the
	// keepalive to carry a newly confirmed stream's lease a whole lease
	// ahead.
	window    time.Duration
	confirmBy time.Time
	playing   bool
	served    bool
	renewNow  bool
	// heads follows the players fetching the stream's main track, and
	// screens are the slots its players beyond the first hold (screens.go).
	heads     *playhead.Tracker
	screens   []screenLease
	restarted time.Time // when its client last opened its title again
	revoked   bool      // closed, kicked or evicted: refuse it, cut it
	client    string    // what kind of client started it, coarsely (clientKind)
	ended     bool      // its connection ended or it was closed: renew nothing more
	keepalive *time.Timer
	// failedAt and failure are the last renewal that could not reach the
	// store.
	failedAt time.Time
	failure  error

	// renewing is held by a renewal's store call and by the stream's end,
	// so that a renewal already under way cannot bring back a lease that
	// the end has just released, and so that a stream's requests that
	// arrive together share one renewal.
	renewing sync.Mutex
}

// tokenCache is what a stream under path_token keeps to spare its next
// requests work.
type tokenCache struct {
	// bound holds the last tokens found made for their paths here (their
	// scope, MAC and path): a playlist's segments share one, and it need
	// not be checked again.
	bound     [4]boundToken
	boundNext int
	// prefixes are tokenized prefixes of the manifests rewritten for the
	// stream here, by client directory, directory and extra: a live
	// playlist read again every few seconds reuses them (rewrite.go).
	prefixes map[streamPrefix]string
}

// tokenCacheLocked returns the stream's token cache, made if need be;
// ls.mu is held.
func (ls *localStream) tokenCacheLocked() *tokenCache {
	if ls.tokens == nil {
		ls.tokens = &tokenCache{}
	}
	return ls.tokens
}

// streamTerms are what the handler that serves a stream's request holds it
// to: the keepalive renews with the latest request's terms.
type streamTerms struct {
	ttl       time.Duration // the grace: how long a lease outlives its stream's media
	limit     int
	session   bool
	maxBuffer time.Duration // the most media a lease covers beyond ttl
}

// liveRequest is one request of a stream that is being served.
type liveRequest struct {
	mu     sync.Mutex
	done   bool
	cancel context.CancelCauseFunc // of the request's context; nil for one not cut (a manifest)
}

// cut cuts the request unless it has already finished. Cutting cancels
// the request's context: reverse_proxy stops and aborts the response. (A
// write deadline would also stop handlers that ignore the context, but
// Caddy's response writers may not be touched from another goroutine.)
func (f *liveRequest) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done && f.cancel != nil {
		f.cancel(errStreamCut)
	}
}

var errStreamCut = errors.New("stream revoked")

func (f *liveRequest) finish() {
	f.mu.Lock()
	f.done = true
	f.mu.Unlock()
}

// renewEvery is how often a stream's lease is refreshed in the store: a
// third of the lease, so two renewals may fail before the lease lapses.
func renewEvery(ttl time.Duration) time.Duration { return ttl / 3 }

// unhurried marks a renewal for ttl as one nobody waits on: beside a
// request being served, or the keepalive's, of a stream whose grace is
// grace. The store may hold it a tenth of a renewal interval (50 ms at
// most) to send it with others (lease.Unhurried): many streams' renewals
// then share a round trip, whose system calls are most of what a renewal
// costs Caddy. It returns the context to renew in, and ttl less that wait,
// so that a lease carried to the end of its media plus the grace ends no
// later for having waited to be sent.
func unhurried(ctx context.Context, grace, ttl time.Duration) (context.Context, time.Duration) {
	wait := min(50*time.Millisecond, renewEvery(grace)/10)
	return lease.Unhurried(ctx, wait), ttl - wait
}

// lookup returns the local state of a stream, or nil.
func (z *zone) lookup(ref streamRef) *localStream {
	s := z.streams.shard(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[ref]
}

// forget drops the local state of a stream, unless it is revoked: a
// revoked stream stays known here (until the sweep or maxLocalRevoked lets
// it go) so that a request of it whose renewal raced the revocation finds
// it revoked when it enters, rather than entering a new, unrevoked state.
// It returns the start of the stream's lease, if it was admitted here.
func (z *zone) forget(ref streamRef) (started time.Time) {
	s := z.streams.shard(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ls := s.m[ref]; ls != nil {
		ls.mu.Lock()
		revoked := ls.revoked
		started = ls.started
		ls.mu.Unlock()
		if revoked {
			return started
		}
	}
	delete(s.m, ref)
	return started
}

// enter registers a request in flight, creating the stream's local state
// if needed, in one step: neither a revocation nor the idle sweep can slip
// between finding the stream and registering the request. It refuses
// (revoked) a stream revoked meanwhile. confirmed says the store has just
// confirmed the lease. A request in flight with no keepalive running
// starts one. cancel cuts the request; a request without one (a manifest,
// see Handler.serve) is not registered, and its req is nil.
func (z *zone) enter(ref streamRef, terms streamTerms, confirmed bool, cancel context.CancelCauseFunc) (ls *localStream, req *liveRequest, revoked bool) {
	s := z.streams.shard(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	ls = s.m[ref]
	if ls == nil {
		ls = &localStream{ref: ref, zone: z}
		s.put(ref, ls)
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.revoked {
		return ls, nil, true
	}
	if cancel != nil {
		req = &liveRequest{cancel: cancel}
		ls.requests = append(ls.requests, req)
	}
	ls.terms, ls.ended = terms, false
	if confirmed {
		ls.confirmLocked(terms.ttl)
	}
	if ls.keepalive == nil {
		ls.keepalive = time.AfterFunc(renewEvery(ls.terms.ttl), ls.keepAlive)
	}
	return ls, req, false
}

// leave unregisters a request. The keepalive stays: a stream whose short
// requests follow each other (segments) keeps one timer rather than making
// one per request; it stops itself when it finds nothing in flight.
func (ls *localStream) leave(req *liveRequest) {
	if req == nil {
		return // not registered: a request that is not cut
	}
	req.finish()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if i := slices.Index(ls.requests, req); i >= 0 {
		last := len(ls.requests) - 1
		ls.requests[i], ls.requests[last] = ls.requests[last], nil
		ls.requests = ls.requests[:last]
	}
	if len(ls.requests) == 0 {
		ls.requests = nil // its array goes with the last request
	}
}

// end marks the stream ended and runs release, after any renewal under way
// has finished and before any later one can start.
func (ls *localStream) end(release func()) {
	ls.renewing.Lock()
	defer ls.renewing.Unlock()
	ls.mu.Lock()
	ls.ended = true
	if ls.keepalive != nil {
		ls.keepalive.Stop()
		ls.keepalive = nil
	}
	ls.mu.Unlock()
	release()
}

// resume undoes end when the release did not happen. The requests still
// in flight get their keepalive back at once: its renewal also finds a
// revocation that reached the store after all, and cuts them.
func (ls *localStream) resume() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.ended = false
	if ls.keepalive == nil && len(ls.requests) > 0 {
		ls.keepalive = time.AfterFunc(0, ls.keepAlive)
	}
}

// stopKeepalive lets the keepalive lapse: the stream's next request starts
// a new one.
func (ls *localStream) stopKeepalive() {
	ls.mu.Lock()
	ls.keepalive = nil
	ls.mu.Unlock()
}

// renewalFailed records that a renewal could not reach the store, so that
// requests of the stream that waited for it take that answer rather than
// each trying again in turn (a store that is down costs each of them one
// timeout, not one timeout for every request before it).
func (ls *localStream) renewalFailed(err error) {
	ls.mu.Lock()
	ls.failedAt, ls.failure = now(), err
	ls.mu.Unlock()
}

// failedSince returns the store error of a renewal that failed after
// since, if one did.
func (ls *localStream) failedSince(since time.Time) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.failure != nil && !ls.failedAt.Before(since) {
		return ls.failure
	}
	return nil
}

// fresh reports whether the store confirmed the lease recently enough that
// a request of a handler with lease ttl need not renew it: less than a
// renewal interval ago or, while the store holds the lease for more than
// two renewal intervals yet (the stream's media is buffered ahead), less
// than a lease ago. Renewals also find revocations made elsewhere, so one
// runs at least once a lease while requests come.
func (ls *localStream) fresh(ttl time.Duration) (fresh, revoked bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.confirmed.IsZero() {
		return false, ls.revoked
	}
	ttl = min(ttl, ls.terms.ttl)
	t := now()
	if !t.Before(ls.storeUntil) {
		return false, ls.revoked // the lease lapsed (an unconfirmed stream's window ended)
	}
	since := t.Sub(ls.confirmed)
	return since < renewEvery(ttl) || (since < ttl && ls.storeUntil.Sub(t) > 2*renewEvery(ttl)), ls.revoked
}

// confirmedWithin reports whether the store confirmed the lease less than
// d ago.
func (ls *localStream) confirmedWithin(d time.Duration) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !ls.confirmed.IsZero() && now().Sub(ls.confirmed) < d
}

// held reports whether the lease the store last confirmed still runs: the
// slot is surely still the stream's, unless it was revoked, which a
// renewal under way would find.
func (ls *localStream) held() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !ls.confirmed.IsZero() && now().Before(ls.storeUntil)
}

// heldOnceRenewed is held, after the stream's renewal under way, if one
// is, has its answer: a lease renewed beside a request is carried on once
// the store answers, which it may do after a while (lease.Unhurried).
func (ls *localStream) heldOnceRenewed() bool {
	ls.renewing.Lock()
	defer ls.renewing.Unlock()
	return ls.held()
}

// admitted records the start of the lease the store just gave the stream.
func (ls *localStream) admitted(started time.Time) {
	ls.mu.Lock()
	ls.started = started
	ls.mu.Unlock()
}

// lost records that the store no longer holds the stream's lease: its next
// request renews it before it is served.
func (ls *localStream) lost() {
	ls.mu.Lock()
	ls.storeUntil = time.Time{}
	ls.mu.Unlock()
}

// confirm records that the store has just carried the lease ttl ahead.
func (ls *localStream) confirm(ttl time.Duration) {
	ls.mu.Lock()
	ls.confirmLocked(ttl)
	ls.mu.Unlock()
}

func (ls *localStream) confirmLocked(ttl time.Duration) {
	t := now()
	ls.confirmed = t
	until := t.Add(ttl)
	if ls.unconfirmedLocked() && until.After(ls.confirmBy) {
		until = ls.confirmBy // held for its window only (leaseTTL)
	}
	if until.After(ls.storeUntil) {
		ls.storeUntil = until
	}
}

// leaseTTL is how far ahead a renewal now carries the lease: the grace,
// plus the media served here that is still to play, up to maxBuffer.
func (ls *localStream) leaseTTL() time.Duration {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.leaseTTLLocked()
}

func (ls *localStream) leaseTTLLocked() time.Duration {
	t := now()
	ahead := min(max(ls.mediaEnd.Sub(t), 0), ls.terms.maxBuffer)
	ttl := ls.terms.ttl + ahead
	if ls.unconfirmedLocked() {
		// Held for the rest of its window only; a request after the window
		// (the client came back) opens another.
		if !t.Before(ls.confirmBy) {
			ls.confirmBy = t.Add(ls.window)
		}
		ttl = min(ttl, ls.confirmBy.Sub(t))
	}
	return ttl.Round(time.Millisecond)
}

// awaitPlayback makes a stream just admitted, whose lease the store holds
// for window, wait for media to confirm it (confirm_within).
func (ls *localStream) awaitPlayback(window time.Duration) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.playing {
		return
	}
	t := now()
	ls.window, ls.confirmBy, ls.storeUntil = window, t.Add(window), t.Add(window)
}

func (ls *localStream) unconfirmedLocked() bool { return ls.window > 0 && !ls.playing }

// unconfirmed reports whether the stream still waits for media here.
func (ls *localStream) unconfirmed() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.unconfirmedLocked()
}

// answered records the origin's answer to a request of an unconfirmed
// stream: its status, and whether it was media. It reports whether that
// confirmed the stream (its lease is then carried a whole lease ahead, at
// once, beside the response), and whether the stream got nothing but
// errors so far, so that its slot should go now.
func (ls *localStream) answered(status int, media bool) (confirmed, failed bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.unconfirmedLocked() || ls.revoked {
		return false, false // (a revoked stream holds no slot to free)
	}
	ok := status >= 200 && status < 300 || status == http.StatusNotModified
	ls.served = ls.served || ok
	if !ok || !media {
		return false, status >= 400 && !ls.served
	}
	ls.playing, ls.renewNow = true, true
	if ls.keepalive != nil {
		ls.keepalive.Reset(0)
	} else if !ls.ended && !ls.revoked {
		ls.keepalive = time.AfterFunc(0, ls.keepAlive)
	}
	return true, false
}

// played records that a segment holding d of media was served: the
// stream's media runs out d later than it would have, or d from now if it
// had run out. A lease the store holds for less than that gets carried
// further by the keepalive, which starts if none runs; the segments of a
// burst share its one renewal.
func (ls *localStream) played(d time.Duration) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	t := now()
	end := ls.mediaEnd
	if end.Before(t) {
		end = t
	}
	if end = end.Add(d); end.After(t.Add(ls.terms.maxBuffer)) {
		end = t.Add(ls.terms.maxBuffer)
	}
	ls.mediaEnd = end
	if ls.keepalive == nil && !ls.ended && !ls.revoked && ls.behind() {
		ls.keepalive = time.AfterFunc(ls.flushIn(), ls.keepAlive)
	}
}

// knowsFile reports whether the stream's progressive file's duration is
// known here.
func (ls *localStream) knowsFile() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.fileDuration > 0
}

// playedFile records a response of the stream's progressive file: media
// says how much playing time it carried, given the file's duration known
// so far, and the duration the response revealed, if it did.
func (ls *localStream) playedFile(media func(known time.Duration) (carried, found time.Duration)) {
	ls.mu.Lock()
	known := ls.fileDuration
	ls.mu.Unlock()
	carried, found := media(known)
	if found > 0 {
		ls.mu.Lock()
		ls.fileDuration = found
		ls.mu.Unlock()
	}
	if carried > 0 {
		ls.played(carried)
	}
}

// boundToken is a token found made for a path: its scope and MAC, and
// the path its MAC covers.
type boundToken struct {
	scope byte
	mac   string
	path  string
}

// boundBefore reports whether t was found made for its path here before.
func (ls *localStream) boundBefore(t pathToken) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.tokens == nil {
		return false
	}
	for _, b := range ls.tokens.bound {
		if b.scope == t.scope && b.mac == t.mac && t.covers(b.path) {
			return true
		}
	}
	return false
}

// rememberBound notes that t was found made for its path.
func (ls *localStream) rememberBound(t pathToken) {
	p, _ := t.scopedPath()
	ls.mu.Lock()
	c := ls.tokenCacheLocked()
	c.bound[c.boundNext] = boundToken{t.scope, t.mac, p}
	c.boundNext = (c.boundNext + 1) % len(c.bound)
	ls.mu.Unlock()
}

// maxStreamPrefixes bounds the prefixes a stream keeps.
const maxStreamPrefixes = 64

// streamPrefix names a tokenized prefix a stream keeps: the directory the
// client resolves its manifest's URIs against, the manifest's directory,
// and the prefix's key in the manifest.
type streamPrefix struct {
	clientDir, baseDir string
	prefixKey
}

// prefix returns a tokenized prefix kept for the stream, if any.
func (ls *localStream) prefix(key streamPrefix) (string, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.tokens == nil {
		return "", false
	}
	p, ok := ls.tokens.prefixes[key]
	return p, ok
}

// keepPrefix keeps a tokenized prefix for the stream's next manifests.
// The key's strings are copied: they may be parts of a whole manifest.
func (ls *localStream) keepPrefix(key streamPrefix, prefix string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	c := ls.tokenCacheLocked()
	if c.prefixes == nil {
		c.prefixes = make(map[streamPrefix]string)
	}
	if len(c.prefixes) < maxStreamPrefixes {
		key.dir = strings.Clone(key.dir)
		c.prefixes[key] = prefix
	}
}

// flushIn is when the media served must be carried to the store: while a
// whole lease of the store's lease is left, so that a store that fails
// twice, or a process starved of CPU for seconds, still gets it in time.
// Until then the stream's requests (which renew at least once a lease) may
// carry it first, and the media of many segments goes in one renewal.
// A store a whole lease or more behind (after a burst of segments) gets
// the media at the next renewal interval, so that what it holds (for other
// instances, or after this one dies) is not far short of the playback.
func (ls *localStream) flushIn() time.Duration {
	if ls.farBehind() {
		return renewEvery(ls.terms.ttl)
	}
	return max(ls.storeUntil.Sub(now())-ls.terms.ttl, renewEvery(ls.terms.ttl))
}

// farBehind reports whether the store's lease ends a lease or more before
// the stream's media and grace do.
func (ls *localStream) farBehind() bool {
	return ls.mediaEnd.Add(ls.terms.ttl).Sub(ls.storeUntil) >= ls.terms.ttl
}

// behind reports whether the store's lease ends a second or more before
// the stream's media and grace do.
func (ls *localStream) behind() bool {
	return ls.mediaEnd.Add(ls.terms.ttl).Sub(ls.storeUntil) >= time.Second
}

// keepAlive renews the lease while requests are in flight, however long
// they last. It runs on its own timer, not on the module's context: a
// config reload must not stop the keepalive of a request still running.
func (ls *localStream) keepAlive() {
	ls.renewing.Lock()
	defer ls.renewing.Unlock()
	ls.mu.Lock()
	if ls.keepalive == nil || ls.ended {
		ls.mu.Unlock()
		return
	}
	if ls.unconfirmedLocked() && !now().Before(ls.confirmBy) {
		// Its window is over and no media confirmed it: its lease lapses.
		ls.keepalive = nil
		ls.mu.Unlock()
		return
	}
	if len(ls.requests) == 0 && !ls.behind() && !ls.renewNow {
		ls.keepalive = nil // nothing to keep alive; the next request restarts it
		ls.mu.Unlock()
		return
	}
	if len(ls.requests) == 0 && !ls.farBehind() && !ls.renewNow && ls.storeUntil.Sub(now()) > ls.terms.ttl+time.Second {
		// Media to carry, but not yet due: a request of the stream may
		// carry it first.
		ls.keepalive.Reset(ls.flushIn())
		ls.mu.Unlock()
		return
	}
	if ls.revoked {
		ls.mu.Unlock()
		ls.cutAll()
		return
	}
	terms, ttl := ls.terms, ls.leaseTTLLocked()
	ls.mu.Unlock()

	z, logger := ls.zone, ls.zone.logger.Load()
	ctx, cancel := context.WithTimeout(context.Background(), renewEvery(terms.ttl))
	ctx, ttl = unhurried(ctx, terms.ttl, ttl)
	d, err := z.renew(ctx, ls.ref, ttl, terms.limit)
	cancel()
	if err == nil && !d.Admitted {
		err = errAtLimit
	}
	switch {
	case err == nil:
		ls.mu.Lock()
		ls.renewNow = false
		ls.confirmLocked(ttl)
		ls.mu.Unlock()
	case errors.Is(err, lease.ErrRevoked):
		logger.Info("live stream revoked; cutting it", zap.String("zone", z.name), zap.String("stream_id", ls.ref.id))
		ls.stopKeepalive()
		ls.markRevoked()
		return
	case errors.Is(err, errAtLimit):
		// Its lease lapsed and others took the slots: it is not revoked (it
		// may come back when a slot frees, and its next request then starts
		// a keepalive again), but it may not play on now.
		logger.Info("live stream lost its lapsed slot; cutting it", zap.String("zone", z.name), zap.String("stream_id", ls.ref.id))
		ls.stopKeepalive()
		ls.cutAll()
		return
	default:
		// The store is unreachable: keep serving, and try again next round;
		// once the store is back the lease is re-established. Requests of
		// the stream waiting on this renewal take its answer.
		ls.renewalFailed(err)
		logger.Warn("renewing a live stream failed", zap.String("zone", z.name), zap.String("stream_id", ls.ref.id), zap.Error(err))
	}
	ls.mu.Lock()
	switch {
	case ls.keepalive == nil:
	case len(ls.requests) > 0 || (err != nil && (ls.behind() || ls.renewNow)):
		ls.keepalive.Reset(renewEvery(terms.ttl))
	case err == nil && ls.behind():
		// Media served while the store answered, by requests that found
		// the keepalive running and so started none: carried too, when it
		// is due.
		ls.keepalive.Reset(ls.flushIn())
	default:
		ls.keepalive = nil // the lease covers the media served; nothing is in flight
	}
	ls.mu.Unlock()
}

// markRevoked marks the stream revoked and cuts every request of it in
// flight.
func (ls *localStream) markRevoked() {
	ls.mu.Lock()
	ls.revoked = true
	ls.mu.Unlock()
	ls.cutAll()
}

// cutAll cuts every request of the stream in flight.
func (ls *localStream) cutAll() {
	ls.mu.Lock()
	requests := slices.Clone(ls.requests)
	ls.mu.Unlock()
	for _, req := range requests {
		req.cut()
	}
}

// maxLocalRevoked is how many revoked streams a zone remembers here beyond
// those with requests in flight. Forgetting one early costs only a store
// call: its next request asks the store, which still holds its tombstone.
const maxLocalRevoked = 10_000

// markRevoked cuts a stream's requests in this process and remembers that
// it is revoked, so that its next request is refused without asking the
// store.
func (z *zone) markRevoked(ref streamRef, ttl time.Duration) {
	s := z.streams.shard(ref)
	s.mu.Lock()
	ls := s.m[ref]
	if ls == nil {
		// Remember it even with nothing in flight: its next request here is
		// refused at once, whatever renewal coalescing would skip.
		ls = &localStream{ref: ref, zone: z, terms: streamTerms{ttl: ttl}, confirmed: now(), storeUntil: now().Add(ttl)}
		s.put(ref, ls)
	}
	s.mu.Unlock()
	z.mu.Lock()
	z.revokedOrder = append(z.revokedOrder, ref)
	var oldest []streamRef
	if n := len(z.revokedOrder) - maxLocalRevoked; n > 0 {
		oldest = slices.Clone(z.revokedOrder[:n])
		z.revokedOrder = z.revokedOrder[n:]
	}
	z.mu.Unlock()
	for _, ref := range oldest {
		s := z.streams.shard(ref)
		s.mu.Lock()
		if old := s.m[ref]; old != nil && old != ls {
			old.mu.Lock()
			if old.revoked && len(old.requests) == 0 {
				delete(s.m, ref)
			}
			old.mu.Unlock()
		}
		s.mu.Unlock()
	}
	ls.markRevoked()
}

// describeClient notes, coarsely, what kind of client started the stream,
// from its User-Agent: for the viewer's own refusals, never more.
func (ls *localStream) describeClient(userAgent string) {
	kind := clientKind(userAgent)
	ls.mu.Lock()
	ls.client = kind
	ls.mu.Unlock()
}

// clientKind is what describeClient noted.
func (ls *localStream) clientKind() string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.client
}
