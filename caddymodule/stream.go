package caddymodule

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// localStream is this process's view of one stream: the requests in flight
// (to keep its lease alive and to cut them when it is revoked) and when the
// store last confirmed its lease (to coalesce renewals).
type localStream struct {
	ref  streamRef
	zone *zone

	mu        sync.Mutex
	terms     streamTerms // those of the request that entered last
	requests  map[*liveRequest]struct{}
	confirmed time.Time
	revoked   bool // closed, kicked or evicted: refuse it, cut it
	ended     bool // its connection ended or it was closed: renew nothing more
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

// streamTerms are what the handler that serves a stream's request holds it
// to: the keepalive renews with the latest request's terms.
type streamTerms struct {
	ttl     time.Duration
	limit   int
	session bool
}

// liveRequest is one request of a stream that is being served.
type liveRequest struct {
	mu     sync.Mutex
	done   bool
	cancel context.CancelCauseFunc // of the request's context
}

// cut cuts the request unless it has already finished. Cutting cancels
// the request's context: reverse_proxy stops and aborts the response. (A
// write deadline would also stop handlers that ignore the context, but
// Caddy's response writers may not be touched from another goroutine.)
func (f *liveRequest) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done {
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

// lookup returns the local state of a stream, or nil.
func (z *zone) lookup(ref streamRef) *localStream {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.streams[ref]
}

// forget drops the local state of a stream.
func (z *zone) forget(ref streamRef) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.streams, ref)
}

// enter registers a request in flight, creating the stream's local state
// if needed, in one step: neither a revocation nor the idle sweep can slip
// between finding the stream and registering the request. It refuses
// (revoked) a stream revoked meanwhile. confirmed says the store has just
// confirmed the lease. A request in flight with no keepalive running
// starts one.
func (z *zone) enter(ref streamRef, terms streamTerms, confirmed bool, cancel context.CancelCauseFunc) (ls *localStream, req *liveRequest, revoked bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	ls = z.streams[ref]
	if ls == nil {
		ls = &localStream{ref: ref, zone: z, requests: make(map[*liveRequest]struct{})}
		z.streams[ref] = ls
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.revoked {
		return ls, nil, true
	}
	req = &liveRequest{cancel: cancel}
	ls.requests[req] = struct{}{}
	ls.terms, ls.ended = terms, false
	if confirmed {
		ls.confirmed = now()
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
	req.finish()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delete(ls.requests, req)
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
// a request of a handler with lease ttl need not renew it.
func (ls *localStream) fresh(ttl time.Duration) (fresh, revoked bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !ls.confirmed.IsZero() && now().Sub(ls.confirmed) < renewEvery(min(ttl, ls.terms.ttl)), ls.revoked
}

// held reports whether the store confirmed the lease less than a lease
// (of a handler with lease ttl) ago: the slot is surely still the stream's,
// unless it was revoked, which a renewal under way would find.
func (ls *localStream) held(ttl time.Duration) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !ls.confirmed.IsZero() && now().Sub(ls.confirmed) < min(ttl, ls.terms.ttl)
}

func (ls *localStream) confirm() {
	ls.mu.Lock()
	ls.confirmed = now()
	ls.mu.Unlock()
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
	if len(ls.requests) == 0 {
		ls.keepalive = nil // nothing to keep alive; the next request restarts it
		ls.mu.Unlock()
		return
	}
	if ls.revoked {
		ls.mu.Unlock()
		ls.cutAll()
		return
	}
	terms := ls.terms
	ls.mu.Unlock()

	z, logger := ls.zone, ls.zone.logger.Load()
	ctx, cancel := context.WithTimeout(context.Background(), renewEvery(terms.ttl))
	d, err := z.renew(ctx, ls.ref, terms.ttl, terms.limit)
	cancel()
	if err == nil && !d.Admitted {
		err = errAtLimit
	}
	switch {
	case err == nil:
		ls.confirm()
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
	if ls.keepalive != nil {
		ls.keepalive.Reset(renewEvery(terms.ttl))
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
	requests := make([]*liveRequest, 0, len(ls.requests))
	for req := range ls.requests {
		requests = append(requests, req)
	}
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
	z.mu.Lock()
	ls := z.streams[ref]
	if ls == nil {
		// Remember it even with nothing in flight: its next request here is
		// refused at once, whatever renewal coalescing would skip.
		ls = &localStream{ref: ref, zone: z, terms: streamTerms{ttl: ttl}, confirmed: now(), requests: make(map[*liveRequest]struct{})}
		z.streams[ref] = ls
	}
	z.revokedOrder = append(z.revokedOrder, ref)
	for len(z.revokedOrder) > maxLocalRevoked {
		oldest := z.revokedOrder[0]
		z.revokedOrder = z.revokedOrder[1:]
		if old := z.streams[oldest]; old != nil && old != ls {
			old.mu.Lock()
			if old.revoked && len(old.requests) == 0 {
				delete(z.streams, oldest)
			}
			old.mu.Unlock()
		}
	}
	z.mu.Unlock()
	ls.markRevoked()
}
