package caddymodule

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// zones holds each zone's process-wide state. It outlives config reloads:
// a reload provisions new handlers (which take a reference) before the old
// ones are cleaned up (which drop theirs), so live streams and their store
// carry over untouched.
var zones = caddy.NewUsagePool()

// zone is one zone's state in this process: its store and the streams whose
// requests are in flight here.
type zone struct {
	name          string
	storeIdentity string
	store         lease.Store

	mu      sync.Mutex
	streams map[streamRef]*localStream

	stop chan struct{}
}

type streamRef struct {
	key lease.Key
	id  string
}

// loadZone returns the shared zone for name and store identity, opening
// the store only when no handler holds the zone yet.
func loadZone(name, storeIdentity string, open func() (lease.Store, error)) (*zone, error) {
	val, _, err := zones.LoadOrNew(zoneKey{name, storeIdentity}, func() (caddy.Destructor, error) {
		s, err := open()
		if err != nil {
			return nil, err
		}
		z := &zone{name: name, storeIdentity: storeIdentity, store: s, streams: make(map[streamRef]*localStream), stop: make(chan struct{})}
		go z.forgetIdleEvery(10 * time.Second)
		return z, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*zone), nil
}

type zoneKey struct{ name, store string }

// Destruct closes the zone when its last handler is gone.
func (z *zone) Destruct() error {
	close(z.stop)
	return z.store.Close()
}

// localStream is this process's view of one stream: the requests in flight
// (to keep its lease alive and to cut them when it is revoked) and when the
// store last confirmed its lease (to coalesce renewals).
type localStream struct {
	ref  streamRef
	ttl  time.Duration
	zone *zone

	mu        sync.Mutex
	inflight  map[*inflight]struct{}
	confirmed time.Time
	revoked   bool
	keepalive *time.Timer
	logger    *zap.Logger
	// renew asks the store to extend the lease, re-admitting it if it
	// lapsed; it is the handler's, so that it applies the handler's limit.
	renew func(context.Context) error
}

// inflight is one request of a stream that is being served.
type inflight struct {
	mu   sync.Mutex
	done bool
	cut  func()
}

// cutNow cuts the request unless it has already finished: cutting a
// finished request would cut whatever its connection serves next.
func (f *inflight) cutNow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done {
		f.cut()
	}
}

func (f *inflight) finish() {
	f.mu.Lock()
	f.done = true
	f.mu.Unlock()
}

// renewEvery is how often a stream's lease is refreshed in the store: a
// third of the lease, so two renewals may fail before the lease lapses.
func renewEvery(ttl time.Duration) time.Duration { return ttl / 3 }

// stream returns the local state of a stream, creating it if needed.
func (z *zone) stream(ref streamRef, ttl time.Duration) *localStream {
	z.mu.Lock()
	defer z.mu.Unlock()
	ls := z.streams[ref]
	if ls == nil {
		ls = &localStream{ref: ref, ttl: ttl, zone: z, inflight: make(map[*inflight]struct{})}
		z.streams[ref] = ls
	}
	return ls
}

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

// revoked cuts a stream's requests in this process and remembers that it
// is revoked, so that its next request is refused without asking the store.
func (z *zone) revoked(ref streamRef) {
	if ls := z.lookup(ref); ls != nil {
		ls.revoke()
	}
}

// closed cuts a stream's requests in this process and forgets it: a closed
// stream's id, used again, is a new start.
func (z *zone) closed(ref streamRef) {
	z.mu.Lock()
	ls := z.streams[ref]
	delete(z.streams, ref)
	z.mu.Unlock()
	if ls != nil {
		ls.cutAll()
	}
}

// fresh reports whether the store confirmed the lease recently enough that
// this request need not renew it.
func (ls *localStream) fresh(now time.Time) (fresh, revoked bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !ls.confirmed.IsZero() && now.Sub(ls.confirmed) < renewEvery(ls.ttl), ls.revoked
}

func (ls *localStream) confirm(now time.Time) {
	ls.mu.Lock()
	ls.confirmed = now
	ls.mu.Unlock()
}

// enter registers a request in flight; the first one starts the keepalive.
func (ls *localStream) enter(cut func(), renew func(context.Context) error, logger *zap.Logger) *inflight {
	f := &inflight{cut: cut}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.inflight[f] = struct{}{}
	ls.renew, ls.logger = renew, logger
	if ls.keepalive == nil {
		ls.keepalive = time.AfterFunc(renewEvery(ls.ttl), ls.keepAlive)
	}
	return f
}

// leave unregisters a request; the last one stops the keepalive. It
// reports whether any request of the stream is still in flight.
func (ls *localStream) leave(f *inflight) (busy bool) {
	f.finish()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delete(ls.inflight, f)
	if len(ls.inflight) == 0 && ls.keepalive != nil {
		ls.keepalive.Stop()
		ls.keepalive = nil
	}
	return len(ls.inflight) > 0
}

// keepAlive renews the lease while requests are in flight, however long
// they last. It runs on its own timer, not on the module's context: a
// config reload must not stop the keepalive of a request still running.
func (ls *localStream) keepAlive() {
	ls.mu.Lock()
	if ls.keepalive == nil || ls.revoked {
		ls.mu.Unlock()
		return
	}
	renew, logger := ls.renew, ls.logger
	ls.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), renewEvery(ls.ttl))
	err := renew(ctx)
	cancel()
	switch {
	case err == nil:
		ls.confirm(time.Now())
	case errors.Is(err, lease.ErrRevoked), errors.Is(err, errAtLimit):
		logger.Info("live stream lost its slot; cutting it", zap.String("zone", ls.zone.name), zap.String("stream_id", ls.ref.id), zap.Error(err))
		ls.revoke()
		return
	default:
		// The store is unreachable: keep serving, and try again next round;
		// once the store is back the lease is re-established.
		logger.Warn("renewing a live stream failed", zap.String("zone", ls.zone.name), zap.String("stream_id", ls.ref.id), zap.Error(err))
	}
	ls.mu.Lock()
	if ls.keepalive != nil {
		ls.keepalive.Reset(renewEvery(ls.ttl))
	}
	ls.mu.Unlock()
}

// revoke marks the stream revoked and cuts every request of it in flight.
func (ls *localStream) revoke() {
	ls.mu.Lock()
	ls.revoked = true
	ls.mu.Unlock()
	ls.cutAll()
}

// cutAll cuts every request of the stream in flight.
func (ls *localStream) cutAll() {
	ls.mu.Lock()
	flights := make([]*inflight, 0, len(ls.inflight))
	for f := range ls.inflight {
		flights = append(flights, f)
	}
	ls.mu.Unlock()
	for _, f := range flights {
		f.cutNow()
	}
}

// forgetIdleEvery drops local state of streams with no request in flight
// whose lease the store has surely dropped or another process renews: the
// next request of such a stream simply asks the store again.
func (z *zone) forgetIdleEvery(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-z.stop:
			return
		case now := <-t.C:
			z.mu.Lock()
			for ref, ls := range z.streams {
				ls.mu.Lock()
				keep := ls.ttl
				if ls.revoked {
					keep = lease.TombstoneTTL(ls.ttl)
				}
				idle := len(ls.inflight) == 0 && now.Sub(ls.confirmed) > keep
				ls.mu.Unlock()
				if idle {
					delete(z.streams, ref)
				}
			}
			z.mu.Unlock()
		}
	}
}
