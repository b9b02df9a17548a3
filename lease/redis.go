package lease

import (
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// The scripts, each run as one atomic step. common.lua is prepended to each.
var (
	//go:embed lua/common.lua
	luaCommon string
	//go:embed lua/acquire.lua
	luaAcquire string
	//go:embed lua/renew.lua
	luaRenew string
	//go:embed lua/release.lua
	luaRelease string
	//go:embed lua/list.lua
	luaList string
	//go:embed lua/secret.lua
	luaSecret string

	scriptAcquire = redis.NewScript(luaCommon + luaAcquire)
	scriptRenew   = redis.NewScript(luaCommon + luaRenew)
	scriptRelease = redis.NewScript(luaCommon + luaRelease)
	scriptList    = redis.NewScript(luaCommon + luaList)
	scriptSecret  = redis.NewScript(luaSecret)
)

// DefaultKeyPrefix starts every key the Redis store writes.
const DefaultKeyPrefix = "streamlimit:"

// RedisStore keeps leases in Redis (standalone, Sentinel or Cluster), shared
// by every proxy that uses the same Redis and key prefix. Each call is one
// Lua script on one Cluster slot, timed by Redis's clock.
type RedisStore struct {
	client   redis.UniversalClient
	batch    *batcher // acquires, renewals and releases
	prefix   string
	onExpire func(Key, Lease)
}

// RedisOptions tunes a RedisStore.
type RedisOptions struct {
	// KeyPrefix starts every key; default "streamlimit:". It must not hold
	// braces, which would move the Cluster hash tag.
	KeyPrefix string
	// OnExpire hears of each lease found lapsed (when a script prunes it).
	OnExpire func(Key, Lease)
}

// NewRedisStore returns a store on client. The client stays the caller's:
// Close does not close it.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) (*RedisStore, error) {
	prefix := opts.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("key prefix %q: braces would break the Cluster hash tag", prefix)
	}
	return &RedisStore{client: client, batch: &batcher{client: client}, prefix: prefix, onExpire: opts.OnExpire}, nil
}

// tagEncoding turns any bytes into text with neither braces nor dots, so
// that "{zone.user}" is one hash tag per (zone, user) and no two pairs share
// a tag.
var tagEncoding = base64.RawURLEncoding

// keys returns the (zone, user)'s leases, tombstones and limit keys, all in
// one Cluster slot.
func (s *RedisStore) keys(key Key) []string {
	tag := "{" + tagEncoding.EncodeToString([]byte(key.Zone)) + "." + tagEncoding.EncodeToString([]byte(key.User)) + "}"
	base := s.prefix + tag
	return []string{base + ":l", base + ":t", base + ":o"}
}

// packID turns a stream id into the 16 bytes stored in Redis.
func packID(id string) (string, error) {
	u, err := parseID(id)
	if err != nil {
		return "", err
	}
	return string(u[:]), nil
}

func unpackID(b string) string {
	if len(b) < 16 {
		return ""
	}
	var u uuid.UUID
	copy(u[:], b[:16])
	return u.String()
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms) }

// Acquire implements Store.
func (s *RedisStore) Acquire(ctx context.Context, req AcquireRequest) (Decision, error) {
	if err := validateLease(req.Key, req.ID, req.TTL); err != nil {
		return Decision{}, err
	}
	id, _ := packID(req.ID)
	res, err := s.batch.run(ctx, scriptAcquire, s.keys(req.Key), acquireArgs(id, req)...)
	if err != nil {
		return Decision{}, err
	}
	r, err := replyOf(res, 8)
	if err != nil {
		return Decision{}, err
	}
	s.lapsed(req.Key, r.list(7))
	switch r.int(0) {
	case -1:
		return Decision{}, ErrRevoked
	case 0:
		return Decision{Limit: int(r.int(1)), Active: int(r.int(2)), RetryAfter: time.Duration(r.int(5)) * time.Millisecond, Held: r.leases(6)}, r.err
	}
	d := Decision{
		Admitted: true,
		Limit:    int(r.int(1)),
		Active:   int(r.int(2)),
		Lease:    Lease{ID: req.ID, Started: msTime(r.int(3)), Expires: msTime(r.int(4))},
	}
	for _, e := range r.list(6) {
		d.Evicted = append(d.Evicted, unpackID(e))
	}
	return d, r.err
}

// acquireArgs are acquire.lua's ARGV for req, whose id is packed.
func acquireArgs(packedID string, req AcquireRequest) []any {
	policy := 0
	if req.Policy == EvictOldest {
		policy = 1
	}
	return []any{packedID, req.TTL.Milliseconds(), max(req.Limit, 0), policy, TombstoneTTL(req.TTL).Milliseconds(), MaxTombstones}
}

// Renew implements Store.
func (s *RedisStore) Renew(ctx context.Context, key Key, id string, ttl time.Duration) (Lease, error) {
	if err := validateLease(key, id, ttl); err != nil {
		return Lease{}, err
	}
	packed, _ := packID(id)
	res, err := s.batch.run(ctx, scriptRenew, s.keys(key)[:2], packed, ttl.Milliseconds())
	if err != nil {
		return Lease{}, err
	}
	r, err := replyOf(res, 4)
	if err != nil {
		return Lease{}, err
	}
	s.lapsed(key, r.list(3))
	switch r.int(0) {
	case -1:
		return Lease{}, ErrRevoked
	case 0:
		return Lease{}, ErrNotFound
	}
	return Lease{ID: id, Started: msTime(r.int(1)), Expires: msTime(r.int(2))}, r.err
}

// Release implements Store.
func (s *RedisStore) Release(ctx context.Context, key Key, id string) error {
	return s.remove(ctx, key, id, 0)
}

// ReleaseLease implements LeaseReleaser: the lease's member in Redis is
// its id and its start, so it goes with one ZREM, no script. (Each call a
// script makes costs Redis more than the ZREM itself: INFO commandstats,
// docs/BENCHMARKS.md.)
func (s *RedisStore) ReleaseLease(ctx context.Context, key Key, l Lease) error {
	if err := validateLease(key, l.ID, time.Second); err != nil {
		return err
	}
	packed, _ := packID(l.ID)
	n, err := s.batch.do(ctx, "zrem", s.keys(key)[0], packed+pack48(l.Started.UnixMilli()))
	if err != nil {
		return err
	}
	if n != int64(1) {
		return ErrNotFound
	}
	return nil
}

// pack48 is a start time as acquire.lua stores it: 6 bytes, big-endian
// milliseconds.
func pack48(ms int64) string {
	var b [6]byte
	for i := range b {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	return string(b[:])
}

// Revoke implements Store.
func (s *RedisStore) Revoke(ctx context.Context, key Key, id string, tombstoneTTL time.Duration) error {
	if err := validateTombstoneTTL(tombstoneTTL); err != nil {
		return err
	}
	return s.remove(ctx, key, id, tombstoneTTL)
}

func (s *RedisStore) remove(ctx context.Context, key Key, id string, tombstoneTTL time.Duration) error {
	if err := validateLease(key, id, time.Second); err != nil {
		return err
	}
	packed, _ := packID(id)
	res, err := s.batch.run(ctx, scriptRelease, s.keys(key)[:2], packed, tombstoneTTL.Milliseconds(), MaxTombstones)
	if err != nil {
		return err
	}
	r, err := replyOf(res, 2)
	if err != nil {
		return err
	}
	s.lapsed(key, r.list(1))
	if r.int(0) == 0 {
		return ErrNotFound
	}
	return r.err
}

// List implements Store.
func (s *RedisStore) List(ctx context.Context, key Key) ([]Lease, error) {
	if err := validateKey(key); err != nil {
		return nil, err
	}
	res, err := scriptList.Run(ctx, s.client, s.keys(key)[:2]).Slice()
	if err != nil {
		return nil, err
	}
	r, err := replyOf(res, 2)
	if err != nil {
		return nil, err
	}
	s.lapsed(key, r.list(1))
	flat := r.list(0)
	var out []Lease
	for i := 0; i+1 < len(flat); i += 2 {
		var expires int64
		if _, err := fmt.Sscan(flat[i+1], &expires); err != nil {
			return nil, fmt.Errorf("lease: bad score %q in Redis", flat[i+1])
		}
		out = append(out, leaseOf(flat[i], expires))
	}
	sortByStart(out)
	return out, r.err
}

func leaseOf(member string, expires int64) Lease {
	var started int64
	if len(member) >= 22 {
		for _, b := range []byte(member[16:22]) {
			started = started<<8 | int64(b)
		}
	}
	return Lease{ID: unpackID(member), Started: msTime(started), Expires: msTime(expires)}
}

func (s *RedisStore) lapsed(key Key, members []string) {
	if s.onExpire == nil {
		return
	}
	for _, m := range members {
		s.onExpire(key, leaseOf(m, 0))
	}
}

// SetOverride implements Store.
func (s *RedisStore) SetOverride(ctx context.Context, key Key, limit int) error {
	if err := validateKey(key); err != nil {
		return err
	}
	if limit < 0 {
		return fmt.Errorf("%w: negative limit", ErrBadRequest)
	}
	return s.client.Set(ctx, s.keys(key)[2], limit, 0).Err()
}

// ClearOverride implements Store.
func (s *RedisStore) ClearOverride(ctx context.Context, key Key) (bool, error) {
	if err := validateKey(key); err != nil {
		return false, err
	}
	n, err := s.client.Del(ctx, s.keys(key)[2]).Result()
	return n > 0, err
}

// Override implements Store.
func (s *RedisStore) Override(ctx context.Context, key Key) (int, bool, error) {
	if err := validateKey(key); err != nil {
		return 0, false, err
	}
	n, err := s.client.Get(ctx, s.keys(key)[2]).Int()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return n, true, nil
}

// Totals implements Store: it scans the zone's keys (on every master of a
// Cluster) and counts their live members.
func (s *RedisStore) Totals(ctx context.Context, zone string) (Totals, error) {
	now, err := s.client.Time(ctx).Result()
	if err != nil {
		return Totals{}, err
	}
	min := "(" + fmt.Sprint(now.UnixMilli())
	pattern := globEscape(s.prefix) + "{" + tagEncoding.EncodeToString([]byte(zone)) + ".*}:l"
	var mu sync.Mutex
	var t Totals
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			n, err := c.ZCount(ctx, iter.Val(), min, "+inf").Result()
			if err != nil {
				return err
			}
			if n > 0 {
				mu.Lock()
				t.Users++
				t.Streams += int(n)
				mu.Unlock()
			}
		}
		return iter.Err()
	}
	if cluster, ok := s.client.(*redis.ClusterClient); ok {
		err = cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.client)
	}
	return t, err
}

// globEscape quotes the characters SCAN MATCH treats as wildcards.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SharedSecret implements Store: the first proposal is kept under
// <prefix>secret, with no expiry.
func (s *RedisStore) SharedSecret(ctx context.Context, proposal []byte) ([]byte, error) {
	if len(proposal) == 0 {
		return nil, fmt.Errorf("%w: empty secret", ErrBadRequest)
	}
	kept, err := scriptSecret.Run(ctx, s.client, []string{s.prefix + "secret"}, proposal).Text()
	if err != nil {
		return nil, err
	}
	return []byte(kept), nil
}

// Close implements Store; the client is the caller's to close.
func (s *RedisStore) Close() error { return nil }

// reply reads a script's array reply; the first malformed field sets err.
type reply struct {
	fields []any
	err    error
}

func replyOf(res []any, n int) (*reply, error) {
	if len(res) < n {
		return nil, fmt.Errorf("lease: script replied %d fields, want %d", len(res), n)
	}
	return &reply{fields: res}, nil
}

func (r *reply) int(i int) int64 {
	v, ok := r.fields[i].(int64)
	if !ok && r.err == nil {
		r.err = fmt.Errorf("lease: script field %d is %T, want an integer", i, r.fields[i])
	}
	return v
}

// leases reads field i as leases, {packed id, started ms, expires ms}
// flattened.
func (r *reply) leases(i int) []Lease {
	items, ok := r.fields[i].([]any)
	if !ok || len(items)%3 != 0 {
		if r.err == nil {
			r.err = fmt.Errorf("lease: script field %d is not a list of leases", i)
		}
		return nil
	}
	var out []Lease
	for j := 0; j < len(items); j += 3 {
		id, _ := items[j].(string)
		started, _ := items[j+1].(int64)
		expires, _ := items[j+2].(int64)
		out = append(out, Lease{ID: unpackID(id), Started: msTime(started), Expires: msTime(expires)})
	}
	return out
}

func (r *reply) list(i int) []string {
	items, ok := r.fields[i].([]any)
	if !ok {
		if r.err == nil {
			r.err = fmt.Errorf("lease: script field %d is %T, want an array", i, r.fields[i])
		}
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, _ := it.(string)
		out = append(out, s)
	}
	return out
}

var (
	_ Store         = (*RedisStore)(nil)
	_ LeaseReleaser = (*RedisStore)(nil)
)
