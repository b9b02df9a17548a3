package caddymodule

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// Release causes, as metrics labels and in stream_ended events.
const (
	causeClose         = "close"
	causeConnectionEnd = "connection_end"
	causeExpiry        = "expiry"
	causeKick          = "kick"
	causeEviction      = "eviction"
	// causeNotPlayed: a start the origin answered with errors only
	// (confirm_within).
	causeNotPlayed = "not_played"
)

// metrics are created once and registered in every config's registry: each
// reload brings a new registry, and registering once would leave the new
// one without them.
var metrics = struct {
	once          sync.Once
	admitted      *prometheus.CounterVec
	denied        *prometheus.CounterVec
	dryRunDenied  *prometheus.CounterVec
	released      *prometheus.CounterVec
	active        *prometheus.GaugeVec
	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
	storeUp       *prometheus.GaugeVec
}{}

func initMetrics(registry *prometheus.Registry) error {
	const ns, sub = "caddy", "stream_limit"
	metrics.once.Do(func() {
		metrics.admitted = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "admitted_total",
			Help: "Streams admitted: new starts and lapsed streams re-admitted.",
		}, []string{"zone"})
		metrics.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "denied_total",
			Help: "Requests refused, by reason (limit, missing_user, bad_user, bad_stream_id, stream_not_found, revoked, bad_limit, store_error).",
		}, []string{"zone", "reason"})
		metrics.dryRunDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "dry_run_denied_total",
			Help: "Starts that dry_run let through but would have refused at the limit.",
		}, []string{"zone"})
		metrics.released = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "released_total",
			Help: "Streams ended, by cause (close, connection_end, expiry, kick, eviction).",
		}, []string{"zone", "cause"})
		metrics.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "active_streams",
			Help: "Streams this instance served within their last lease (sum it over a fleet).",
		}, []string{"zone"})
		metrics.storeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "store_duration_seconds",
			Help:    "Latency of lease store calls, by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"zone", "op"})
		metrics.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "store_errors_total",
			Help: "Lease store calls that failed (unreachable, timed out), by operation.",
		}, []string{"zone", "op"})
		metrics.storeUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "store_up",
			Help: "1 when the zone's last call to its lease store (memory, redis, ...) was answered, 0 when it failed (unreachable, timed out, out of memory).",
		}, []string{"zone", "store"})
	})
	for _, c := range []prometheus.Collector{metrics.admitted, metrics.denied, metrics.dryRunDenied, metrics.released, metrics.active, metrics.storeDuration, metrics.storeErrors, metrics.storeUp} {
		if err := registry.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}

// meteredStore times every call of a zone's store and counts its failures.
// Answers that are part of the contract (not found, revoked, bad request)
// are not failures.
type meteredStore struct {
	lease.Store
	zone      string
	durations map[string]prometheus.Observer // by op, looked up once
	up        prometheus.Gauge
}

// newMeteredStore meters store s of a zone; storeName (the store module's
// name) keeps apart the gauges of a zone name used with two stores.
func newMeteredStore(s lease.Store, zone, storeName string) meteredStore {
	m := meteredStore{Store: s, zone: zone, durations: map[string]prometheus.Observer{}, up: metrics.storeUp.WithLabelValues(zone, storeName)}
	m.up.Set(1) // until a call fails (a store with I/O is asked at once)
	for _, op := range []string{"acquire", "renew", "release", "revoke", "list", "totals", "secret", "override"} {
		m.durations[op] = metrics.storeDuration.WithLabelValues(zone, op)
	}
	return m
}

func (s meteredStore) observe(op string, began time.Time, err error) {
	s.durations[op].Observe(time.Since(began).Seconds())
	if err != nil && !errors.Is(err, lease.ErrNotFound) && !errors.Is(err, lease.ErrRevoked) && !errors.Is(err, lease.ErrBadRequest) {
		metrics.storeErrors.WithLabelValues(s.zone, op).Inc()
		s.up.Set(0)
		return
	}
	s.up.Set(1)
}

func (s meteredStore) Acquire(ctx context.Context, req lease.AcquireRequest) (d lease.Decision, err error) {
	defer func(began time.Time) { s.observe("acquire", began, err) }(time.Now())
	return s.Store.Acquire(ctx, req)
}

func (s meteredStore) Renew(ctx context.Context, key lease.Key, id string, ttl time.Duration) (l lease.Lease, err error) {
	defer func(began time.Time) { s.observe("renew", began, err) }(time.Now())
	return s.Store.Renew(ctx, key, id, ttl)
}

func (s meteredStore) Release(ctx context.Context, key lease.Key, id string) (err error) {
	defer func(began time.Time) { s.observe("release", began, err) }(time.Now())
	return s.Store.Release(ctx, key, id)
}

// ReleaseLease implements lease.LeaseReleaser where the store does, and
// releases by id where it does not.
func (s meteredStore) ReleaseLease(ctx context.Context, key lease.Key, l lease.Lease) (err error) {
	defer func(began time.Time) { s.observe("release", began, err) }(time.Now())
	if r, ok := s.Store.(lease.LeaseReleaser); ok {
		return r.ReleaseLease(ctx, key, l)
	}
	return s.Store.Release(ctx, key, l.ID)
}

func (s meteredStore) Revoke(ctx context.Context, key lease.Key, id string, ttl time.Duration) (err error) {
	defer func(began time.Time) { s.observe("revoke", began, err) }(time.Now())
	return s.Store.Revoke(ctx, key, id, ttl)
}

func (s meteredStore) List(ctx context.Context, key lease.Key) (l []lease.Lease, err error) {
	defer func(began time.Time) { s.observe("list", began, err) }(time.Now())
	return s.Store.List(ctx, key)
}

func (s meteredStore) Totals(ctx context.Context, zone string) (t lease.Totals, err error) {
	defer func(began time.Time) { s.observe("totals", began, err) }(time.Now())
	return s.Store.Totals(ctx, zone)
}

func (s meteredStore) SharedSecret(ctx context.Context, proposal []byte) (b []byte, err error) {
	defer func(began time.Time) { s.observe("secret", began, err) }(time.Now())
	return s.Store.SharedSecret(ctx, proposal)
}

func (s meteredStore) Override(ctx context.Context, key lease.Key) (n int, ok bool, err error) {
	defer func(began time.Time) { s.observe("override", began, err) }(time.Now())
	return s.Store.Override(ctx, key)
}

func (s meteredStore) SetOverride(ctx context.Context, key lease.Key, limit int) (err error) {
	defer func(began time.Time) { s.observe("override", began, err) }(time.Now())
	return s.Store.SetOverride(ctx, key, limit)
}

func (s meteredStore) ClearOverride(ctx context.Context, key lease.Key) (ok bool, err error) {
	defer func(began time.Time) { s.observe("override", began, err) }(time.Now())
	return s.Store.ClearOverride(ctx, key)
}
