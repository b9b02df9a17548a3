package caddymodule

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
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
	// revokedOrder lists revoked streams, oldest first, so that the oldest
	// idle ones can go when there are more than maxLocalRevoked: one client
	// flooding closes or evictions must not grow this process without end.
	revokedOrder []streamRef

	// secrets are the shared id secrets known here, the one new ids use
	// first; secretMu serializes asking the store for it.
	secretMu   sync.Mutex
	secrets    atomic.Pointer[[][]byte]
	secretRead time.Time

	// emitter sends Caddy events; the latest handler provisioned for the
	// zone installs its own, so events outlive a reload.
	emitter atomic.Pointer[emitter]
	// lease and limit are those of the latest handler provisioned, for
	// kicks and for the admin API (0 when the limit is a placeholder).
	lease atomic.Int64
	limit atomic.Int64
	// admittedCount and deniedCount are this process's decisions.
	admittedCount, deniedCount atomic.Int64
	admittedMetric             prometheus.Counter

	// releases run after their response, in order, on one goroutine;
	// releasing counts those queued and not yet done.
	releases  chan func()
	releasing atomic.Int64

	stop chan struct{}
}

// releaseLater ends a stream after its response has gone: a store's round
// trip, or its timeout when it is down, must not hold the client. When the
// queue is full it ends the stream at once.
func (z *zone) releaseLater(ls *localStream, h *Handler, ref streamRef) {
	job := func() { ls.end(func() { h.release(ref) }) }
	z.releasing.Add(1)
	select {
	case z.releases <- job:
	default:
		z.releasing.Add(-1)
		job()
	}
}

func (z *zone) releaseLoop() {
	for {
		select {
		case job := <-z.releases:
			job()
			z.releasing.Add(-1)
		case <-z.stop:
			return
		}
	}
}

// emitter emits Caddy events on behalf of a handler.
type emitter func(name string, data map[string]any)

func (z *zone) emit(name string, data map[string]any) {
	if e := z.emitter.Load(); e != nil {
		data["zone"] = z.name
		(*e)(name, data)
	}
}

func (z *zone) emitting() bool { return z.emitter.Load() != nil }

// admitted records a stream that took a slot.
func (z *zone) admitted(ref streamRef) {
	z.admittedCount.Add(1)
	z.admittedMetric.Inc()
	if z.emitting() {
		z.emit("stream_started", map[string]any{"stream_id": ref.id, "user": ref.key.User})
	}
}

// ended records a stream that gave its slot back, and why.
func (z *zone) ended(ref streamRef, cause string) {
	metrics.released.WithLabelValues(z.name, cause).Inc()
	if z.emitting() {
		z.emit("stream_ended", map[string]any{"stream_id": ref.id, "user": ref.key.User, "cause": cause})
	}
}

// denied records a refused request.
func (z *zone) denied(user, reason string, extra map[string]any) {
	z.deniedCount.Add(1)
	metrics.denied.WithLabelValues(z.name, reason).Inc()
	data := map[string]any{"user": user, "reason": reason}
	for k, v := range extra {
		data[k] = v
	}
	z.emit("stream_denied", data)
}

// sharedSecret returns the store's shared id secret, asking the store once.
func (z *zone) sharedSecret(ctx context.Context) ([]byte, error) {
	if s := z.secrets.Load(); s != nil {
		return (*s)[0], nil
	}
	z.secretMu.Lock()
	defer z.secretMu.Unlock()
	if s := z.secrets.Load(); s != nil {
		return (*s)[0], nil
	}
	s, err := z.store.SharedSecret(ctx, lease.NewSecret())
	if err != nil {
		return nil, err
	}
	z.secrets.Store(&[][]byte{s})
	return s, nil
}

// verify reports whether any secret known here issued id to key.
func (z *zone) verify(key lease.Key, id string) bool {
	if s := z.secrets.Load(); s != nil {
		for _, secret := range *s {
			if lease.VerifyID(secret, key, id) {
				return true
			}
		}
	}
	return false
}

// refreshSecret reads the store's secret again, at most once a second,
// proposing ours: a store that lost its data gets it back, and a secret
// another instance installed meanwhile is adopted (ids issued under ours
// stay valid here). It reports whether the known secrets changed.
func (z *zone) refreshSecret(ctx context.Context) (bool, error) {
	z.secretMu.Lock()
	defer z.secretMu.Unlock()
	if time.Since(z.secretRead) < time.Second {
		return false, nil
	}
	z.secretRead = time.Now()
	known := *z.secrets.Load()
	s, err := z.store.SharedSecret(ctx, known[0])
	if err != nil {
		return false, err
	}
	for _, k := range known {
		if string(k) == string(s) {
			return false, nil
		}
	}
	z.secrets.Store(&[][]byte{s, known[0]})
	return true, nil
}

type streamRef struct {
	key lease.Key
	id  string
}

// loadZone returns the shared zone for name and store identity, opening
// the store only when no handler holds the zone yet.
func loadZone(name, storeIdentity string, open func(onExpire func(lease.Key, lease.Lease)) (lease.Store, error)) (*zone, error) {
	val, _, err := zones.LoadOrNew(zoneKey{name, storeIdentity}, func() (caddy.Destructor, error) {
		z := &zone{name: name, storeIdentity: storeIdentity, streams: make(map[streamRef]*localStream), stop: make(chan struct{})}
		s, err := open(func(key lease.Key, l lease.Lease) {
			if key.Zone == name {
				// The store calls this under its lock: report it elsewhere.
				go z.ended(streamRef{key, l.ID}, causeExpiry)
			}
		})
		if err != nil {
			return nil, err
		}
		z.store = newMeteredStore(s, name)
		z.admittedMetric = metrics.admitted.WithLabelValues(name)
		metrics.active.WithLabelValues(name).Set(0)
		z.releases = make(chan func(), 4096)
		go z.forgetIdleEvery(10 * time.Second)
		go z.releaseLoop()
		return z, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*zone), nil
}

type zoneKey struct{ name, store string }

// Destruct closes the zone when its last handler is gone (Caddy stops, or
// a reload drops the zone). Releases still under way finish first, so a
// graceful stop gives its streams' slots back rather than leaving them to
// lapse.
func (z *zone) Destruct() error {
	// Caddy's shutdown leaves requests still running after its grace period
	// unfinished, and the process exits under them: a connection-mode
	// stream in flight gives its slot back here, or it would hold it until
	// its lease lapses. (Session streams keep theirs: the player may go on
	// through another instance.)
	z.mu.Lock()
	var ending []*localStream
	for _, ls := range z.streams {
		ls.mu.Lock()
		if len(ls.inflight) > 0 && ls.handler != nil && !ls.handler.session() && !ls.ended {
			ending = append(ending, ls)
		}
		ls.mu.Unlock()
	}
	z.mu.Unlock()
	for _, ls := range ending {
		ls.end(func() { ls.handler.release(ls.ref) })
		ls.cutAll() // it holds no slot now
	}
	// (A counter, not a WaitGroup: requests may still queue releases while
	// this waits.)
	for deadline := time.Now().Add(5 * time.Second); z.releasing.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	close(z.stop)
	return z.store.Close()
}

// localStream is this process's view of one stream: the requests in flight
// (to keep its lease alive and to cut them when it is revoked) and when the
// store last confirmed its lease (to coalesce renewals).
type localStream struct {
	ref  streamRef
	zone *zone

	mu        sync.Mutex
	ttl       time.Duration // the lease of the handler that served it last
	inflight  map[*inflight]struct{}
	confirmed time.Time
	revoked   bool // kicked or evicted: refuse it, cut it
	ended     bool // closed, or its connection ended: renew nothing more
	keepalive *time.Timer
	// handler and limit are those of the request that entered last: the
	// keepalive renews with them.
	handler *Handler
	limit   int

	// renewing is held by a keepalive's store call and by the stream's end,
	// so that a renewal already under way cannot bring back a lease that
	// the end has just released.
	renewing sync.Mutex
}

// inflight is one request of a stream that is being served.
type inflight struct {
	mu     sync.Mutex
	done   bool
	cancel context.CancelCauseFunc // of the request's context
}

// cutNow cuts the request unless it has already finished. Cutting cancels
// the request's context: reverse_proxy stops and aborts the response. (A
// write deadline would also stop handlers that ignore the context, but
// Caddy's response writers may not be touched from another goroutine.)
func (f *inflight) cutNow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done {
		f.cancel(errStreamCut)
	}
}

var errStreamCut = errors.New("stream revoked")

func (f *inflight) finish() {
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

// flight describes a request about to be served as part of a stream.
type flight struct {
	handler   *Handler
	limit     int
	confirmed bool // the store has just confirmed the lease
	cancel    context.CancelCauseFunc
}

// enter registers a request in flight, creating the stream's local state
// if needed, in one step: neither a revocation nor the idle sweep can slip
// between finding the stream and registering the request. It refuses
// (revoked) a stream revoked meanwhile. A request in flight with no
// keepalive running starts one.
func (z *zone) enter(ref streamRef, fl flight) (ls *localStream, f *inflight, revoked bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	ls = z.streams[ref]
	if ls == nil {
		ls = &localStream{ref: ref, zone: z, inflight: make(map[*inflight]struct{})}
		z.streams[ref] = ls
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.revoked {
		return ls, nil, true
	}
	f = &inflight{cancel: fl.cancel}
	ls.inflight[f] = struct{}{}
	ls.ttl, ls.handler, ls.limit, ls.ended = fl.handler.ttl(), fl.handler, fl.limit, false
	if fl.confirmed {
		ls.confirmed = now()
	}
	if ls.keepalive == nil {
		ls.keepalive = time.AfterFunc(renewEvery(ls.ttl), ls.keepAlive)
	}
	return ls, f, false
}

// leave unregisters a request. The keepalive stays: a stream whose short
// requests follow each other (segments) keeps one timer rather than making
// one per request; it stops itself when it finds nothing in flight.
func (ls *localStream) leave(f *inflight) {
	f.finish()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delete(ls.inflight, f)
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

// resume undoes end when the release did not happen.
func (ls *localStream) resume() {
	ls.mu.Lock()
	ls.ended = false
	ls.mu.Unlock()
}

// fresh reports whether the store confirmed the lease recently enough that
// a request of a handler with lease ttl need not renew it.
func (ls *localStream) fresh(ttl time.Duration) (fresh, revoked bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !ls.confirmed.IsZero() && now().Sub(ls.confirmed) < renewEvery(min(ttl, ls.ttl)), ls.revoked
}

// held reports whether the store confirmed the lease less than a lease
// (of a handler with lease ttl) ago: the slot is surely still the stream's,
// unless it was revoked, which a renewal under way would find.
func (ls *localStream) held(ttl time.Duration) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !ls.confirmed.IsZero() && now().Sub(ls.confirmed) < min(ttl, ls.ttl)
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
	if len(ls.inflight) == 0 {
		ls.keepalive = nil // nothing to keep alive; the next request restarts it
		ls.mu.Unlock()
		return
	}
	if ls.revoked {
		ls.mu.Unlock()
		ls.cutAll()
		return
	}
	h, limit, ttl := ls.handler, ls.limit, ls.ttl
	logger := h.logger
	ls.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), renewEvery(ttl))
	d, err := h.renew(ctx, ls.ref, limit)
	cancel()
	if err == nil && !d.Admitted {
		err = errAtLimit
	}
	switch {
	case err == nil:
		ls.confirm()
	case errors.Is(err, lease.ErrRevoked):
		logger.Info("live stream revoked; cutting it", zap.String("zone", ls.zone.name), zap.String("stream_id", ls.ref.id))
		ls.revoke()
		return
	case errors.Is(err, errAtLimit):
		// Its lease lapsed and others took the slots: it is not revoked (it
		// may come back when a slot frees), but it may not play on now.
		logger.Info("live stream lost its lapsed slot; cutting it", zap.String("zone", ls.zone.name), zap.String("stream_id", ls.ref.id))
		ls.cutAll()
		return
	default:
		// The store is unreachable: keep serving, and try again next round;
		// once the store is back the lease is re-established.
		logger.Warn("renewing a live stream failed", zap.String("zone", ls.zone.name), zap.String("stream_id", ls.ref.id), zap.Error(err))
	}
	ls.mu.Lock()
	if ls.keepalive != nil {
		ls.keepalive.Reset(renewEvery(ttl))
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

// maxLocalRevoked is how many revoked streams a zone remembers here beyond
// those with requests in flight. Forgetting one early costs only a store
// call: its next request asks the store, which still holds its tombstone.
const maxLocalRevoked = 10_000

// revoked cuts a stream's requests in this process and remembers that it
// is revoked, so that its next request is refused without asking the store.
func (z *zone) revoked(ref streamRef, ttl time.Duration) {
	z.mu.Lock()
	ls := z.streams[ref]
	if ls == nil {
		// Remember it even with nothing in flight: its next request here is
		// refused at once, whatever renewal coalescing would skip.
		ls = &localStream{ref: ref, zone: z, ttl: ttl, confirmed: now(), inflight: make(map[*inflight]struct{})}
		z.streams[ref] = ls
	}
	z.revokedOrder = append(z.revokedOrder, ref)
	for len(z.revokedOrder) > maxLocalRevoked {
		oldest := z.revokedOrder[0]
		z.revokedOrder = z.revokedOrder[1:]
		if old := z.streams[oldest]; old != nil && old != ls {
			old.mu.Lock()
			if old.revoked && len(old.inflight) == 0 {
				delete(z.streams, oldest)
			}
			old.mu.Unlock()
		}
	}
	z.mu.Unlock()
	ls.revoke()
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
		case <-t.C:
			now := now()
			active := 0
			z.mu.Lock()
			for ref, ls := range z.streams {
				ls.mu.Lock()
				keep := ls.ttl
				if ls.revoked {
					keep = lease.TombstoneTTL(ls.ttl)
				}
				idle := len(ls.inflight) == 0 && now.Sub(ls.confirmed) > keep
				if !ls.revoked && (len(ls.inflight) > 0 || now.Sub(ls.confirmed) <= ls.ttl) {
					active++
				}
				ls.mu.Unlock()
				if idle {
					delete(z.streams, ref)
				}
			}
			z.mu.Unlock()
			metrics.active.WithLabelValues(z.name).Set(float64(active))
		}
	}
}

// clockOffset moves the handler's clock (and the memory store's) in tests
// that drive expiry; it is always 0 in production.
var clockOffset atomic.Int64

func now() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) }
