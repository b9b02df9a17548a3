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
// carry over untouched. A zone knows nothing of the handlers that use it:
// what it needs of them (a stream's lease and limit) comes in with each
// call, so that state flows one way, handler -> zone -> store.
var zones = caddy.NewUsagePool()

// zone is one zone's state in this process: its store and the streams whose
// requests are in flight here.
type zone struct {
	name          string
	storeIdentity string
	store         lease.Store
	// storeTimeout bounds each store call; 0 for a store without I/O.
	storeTimeout time.Duration

	streams *streamTable
	// revokedOrder lists revoked streams, oldest first, so that the oldest
	// idle ones can go when there are more than maxLocalRevoked: one client
	// flooding closes or evictions must not grow this process without end.
	// mu guards it.
	mu           sync.Mutex
	revokedOrder []streamRef
	// reopens are recent starts by client and title (reopen.go).
	reopens reopens

	// idSecrets are the shared id secrets known here, the one new ids use
	// first; idSecretMu serializes asking the store for it (secret.go).
	idSecretMu   sync.Mutex
	idSecrets    atomic.Pointer[[][]byte]
	idSecretRead time.Time

	// logger and emitter are those of the latest handler provisioned for
	// the zone, so that logs and events outlive a reload (an unloaded
	// config's log writers are closed).
	logger  atomic.Pointer[zap.Logger]
	emitter atomic.Pointer[emitter]
	// lease and limit are those of the latest handler provisioned, for
	// kicks and for the admin API (0 when the limit is a placeholder).
	lease atomic.Int64
	limit atomic.Int64
	// admittedCount and deniedCount are this process's decisions.
	admittedCount, deniedCount atomic.Int64
	admittedMetric             prometheus.Counter

	// releases run after their response, on releaseWorkers goroutines
	// (releases.go); releasing counts those queued and not yet done.
	releases  chan func()
	releasing atomic.Int64

	stop chan struct{}
}

type streamRef struct {
	key lease.Key
	id  string
}

type zoneKey struct{ name, store string }

// loadZone returns the shared zone for name and store identity, opening
// the store only when no handler holds the zone yet.
func loadZone(name string, store StoreModule) (*zone, error) {
	val, _, err := zones.LoadOrNew(zoneKey{name, store.Identity()}, func() (caddy.Destructor, error) {
		z := &zone{
			name:          name,
			storeIdentity: store.Identity(),
			storeTimeout:  store.CallTimeout(),
			streams:       newStreamTable(),
			stop:          make(chan struct{}),
		}
		z.logger.Store(zap.NewNop())
		s, err := store.Open(func(key lease.Key, l lease.Lease) {
			if key.Zone == name {
				// The store calls this under its lock: report it elsewhere.
				go z.recordEnded(streamRef{key, l.ID}, causeExpiry)
			}
		})
		if err != nil {
			return nil, err
		}
		z.store = newMeteredStore(s, name, storeName(store))
		z.admittedMetric = metrics.admitted.WithLabelValues(name)
		metrics.active.WithLabelValues(name).Set(0)
		z.releases = make(chan func(), 4096)
		go z.forgetIdleEvery(10 * time.Second)
		for range releaseWorkers {
			go z.releaseLoop()
		}
		return z, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*zone), nil
}

// storeName is a store module's name (memory, redis, ...).
func storeName(store StoreModule) string {
	if m, ok := store.(caddy.Module); ok {
		return m.CaddyModule().ID.Name()
	}
	return "unknown"
}

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
	var ending []*localStream
	z.streams.each(func(s *streamShard) {
		for _, ls := range s.m {
			ls.mu.Lock()
			if len(ls.requests) > 0 && !ls.terms.session && !ls.ended {
				ending = append(ending, ls)
			}
			ls.mu.Unlock()
		}
	})
	for _, ls := range ending {
		ls.end(func() { z.release(ls.ref) })
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

// callContext bounds a store call by the store's timeout, if it has one.
func (z *zone) callContext(parent context.Context) (context.Context, context.CancelFunc) {
	if z.storeTimeout <= 0 {
		return parent, func() {}
	}
	return context.WithTimeout(parent, z.storeTimeout)
}

// errAtLimit is a renewal's answer when a lapsed stream cannot be
// re-admitted because the user's slots are taken.
var errAtLimit = errors.New("stream lapsed and the user is at the limit")

// renew extends a stream's lease to ttl; a stream whose lease lapsed is
// re-admitted under its id when the user holds fewer than limit.
func (z *zone) renew(ctx context.Context, ref streamRef, ttl time.Duration, limit int) (lease.Decision, error) {
	_, err := z.store.Renew(ctx, ref.key, ref.id, ttl)
	if !errors.Is(err, lease.ErrNotFound) {
		return lease.Decision{Admitted: err == nil}, err
	}
	d, err := z.store.Acquire(ctx, lease.AcquireRequest{Key: ref.key, ID: ref.id, Limit: limit, TTL: ttl, Policy: lease.Deny})
	if err == nil && d.Admitted {
		z.recordAdmitted(ref)
	}
	return d, err
}

// releaseLease frees a stream's lease in the store: named whole (its id
// and start) where the store can free it so more cheaply, else by its id.
// (A stream re-admitted since has another start: its id finds it.)
func (z *zone) releaseLease(ctx context.Context, ref streamRef, started time.Time) error {
	if r, ok := z.store.(lease.LeaseReleaser); ok && !started.IsZero() {
		err := r.ReleaseLease(ctx, ref.key, lease.Lease{ID: ref.id, Started: started})
		if !errors.Is(err, lease.ErrNotFound) {
			return err
		}
	}
	return z.store.Release(ctx, ref.key, ref.id)
}

// release frees a stream's slot in the store and forgets it here.
func (z *zone) release(ref streamRef) { z.releaseFor(ref, causeConnectionEnd) }

// releaseFor frees a stream's slot now, for cause.
func (z *zone) releaseFor(ref streamRef, cause string) {
	z.releaseIn(context.Background(), ref, cause)
}

// releaseIn frees a stream's slot for cause, with the store call made in
// ctx (bounded by the store's timeout).
func (z *zone) releaseIn(ctx context.Context, ref streamRef, cause string) {
	started := z.forget(ref)
	ctx, cancel := z.callContext(ctx)
	defer cancel()
	err := z.releaseLease(ctx, ref, started)
	if err == nil {
		z.recordEnded(ref, cause)
	}
	if err != nil && !errors.Is(err, lease.ErrNotFound) {
		// The lease lapses by itself within the lease duration.
		z.logger.Load().Warn("releasing a stream failed; its lease will lapse",
			zap.String("zone", z.name), zap.String("stream_id", ref.id), zap.Error(err))
	}
}
