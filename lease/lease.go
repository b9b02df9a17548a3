// Package lease is the stream-slot algorithm behind caddy-streamlimit: a
// counting semaphore per (zone, user) whose permits are leases that expire
// unless renewed. Stores implement it in one process (MemoryStore) or shared
// by many processes; this package knows nothing of HTTP or Caddy.
package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// MaxUserLen is the longest user key a store accepts, in bytes.
const MaxUserLen = 512

var (
	// ErrNotFound means the stream holds no live lease: it expired, was
	// released, or never existed for this user.
	ErrNotFound = errors.New("lease: stream not found")
	// ErrRevoked means the stream was kicked or evicted; it must not be
	// re-admitted under the same id until its tombstone expires.
	ErrRevoked = errors.New("lease: stream revoked")
	// ErrBadRequest means the call's arguments are unusable (empty user,
	// user too long, an id that is not a canonical UUID, a TTL that is not
	// positive or is longer than MaxTTL).
	ErrBadRequest = errors.New("lease: bad request")
)

// Key names one pool of slots: a user within a zone.
type Key struct {
	Zone string
	User string
}

// Lease is one stream's hold on a slot.
type Lease struct {
	ID      string
	Started time.Time
	Expires time.Time
}

// Policy says what Acquire does when the user is at the limit.
type Policy int

const (
	// Deny refuses the new stream.
	Deny Policy = iota
	// EvictOldest revokes the stream that started first and admits the new one.
	EvictOldest
)

// AcquireRequest asks for a slot for stream ID under Key.
type AcquireRequest struct {
	Key
	// ID is the stream's id: a UUID in canonical form.
	ID string
	// Limit is the caller's limit; a per-user override kept by the store wins.
	Limit  int
	TTL    time.Duration
	Policy Policy
}

// Decision is the outcome of Acquire.
type Decision struct {
	Admitted bool
	// Lease is the stream's lease when admitted.
	Lease Lease
	// Limit is the limit that was applied (the override when one is set).
	Limit int
	// Active counts the user's live leases after the decision.
	Active int
	// Evicted lists the streams revoked to make room (EvictOldest).
	Evicted []string
	// RetryAfter is, when denied, how long until the earliest lease expires.
	RetryAfter time.Duration
	// Held is, when denied, the user's live leases that started first,
	// earliest first, at most MaxHeldReported: what a player can show the
	// viewer of the screens that hold the slots.
	Held []Lease
}

// MaxHeldReported bounds the leases a refusal reports (Decision.Held).
const MaxHeldReported = 16

// Store keeps leases. Every method is one atomic step: concurrent callers,
// in one process or many, never see a user above the limit.
type Store interface {
	// Acquire admits ID if it already holds a live lease (refreshing it) or
	// if the user holds fewer than the limit; otherwise it applies Policy.
	// A refused start takes and extends nothing. It returns ErrRevoked for
	// an ID with a live tombstone.
	Acquire(ctx context.Context, req AcquireRequest) (Decision, error)
	// Renew extends a live lease to now+ttl. It returns ErrNotFound when the
	// lease is gone and ErrRevoked when it was revoked.
	Renew(ctx context.Context, key Key, id string, ttl time.Duration) (Lease, error)
	// Release frees the slot; it returns ErrNotFound if ID held none.
	Release(ctx context.Context, key Key, id string) error
	// Revoke frees the slot and leaves a tombstone for tombstoneTTL so that
	// the stream's next Renew or Acquire returns ErrRevoked. A user keeps at
	// most MaxTombstones; the ones that lapse first go first. It returns
	// ErrNotFound if ID held no live lease.
	Revoke(ctx context.Context, key Key, id string, tombstoneTTL time.Duration) error
	// List returns the user's live leases, oldest first.
	List(ctx context.Context, key Key) ([]Lease, error)
	// SetOverride keeps a per-user limit that wins over the caller's.
	SetOverride(ctx context.Context, key Key, limit int) error
	// ClearOverride removes the per-user limit; ok is false if none was set.
	ClearOverride(ctx context.Context, key Key) (ok bool, err error)
	// Override returns the per-user limit; ok is false if none is set.
	Override(ctx context.Context, key Key) (limit int, ok bool, err error)
	// Totals counts the users holding live leases in a zone, and the
	// leases. It walks every user: for operators, not for the hot path.
	Totals(ctx context.Context, zone string) (Totals, error)
	// SharedSecret returns the secret every user of the store shares for
	// stream ids (see NewID): the first proposal the store sees, kept.
	SharedSecret(ctx context.Context, proposal []byte) ([]byte, error)
	// Close releases the store's resources; leases in a shared store stay.
	Close() error
}

// LeaseReleaser is a Store that frees a lease more cheaply when given the
// lease as Acquire returned it (its id and its start) than by its id alone.
type LeaseReleaser interface {
	// ReleaseLease frees l; it returns ErrNotFound if the store holds no
	// lease with l's id and start (one re-admitted since has another
	// start: Release finds it). A lease that lapsed, and that the store
	// has not dropped yet, may be freed as found.
	ReleaseLease(ctx context.Context, key Key, l Lease) error
}

// Unhurried marks the store calls made with the context it returns as
// ones nobody waits on (a renewal beside a request already being served, a
// release after the response went): a store that sends concurrent calls
// together, as the Redis store does, may hold such a call up to wait, so
// that it shares a round trip with others. Other stores ignore it; the call
// is the same call either way, and its context still bounds it.
func Unhurried(ctx context.Context, wait time.Duration) context.Context {
	return context.WithValue(ctx, unhurriedKey{}, wait)
}

type unhurriedKey struct{}

// unhurried is how long a call made with ctx may wait to be sent: zero
// unless Unhurried said otherwise.
func unhurried(ctx context.Context) time.Duration {
	wait, _ := ctx.Value(unhurriedKey{}).(time.Duration)
	return wait
}

// TombstoneTTL is how long a revoked stream's id stays refused, for a
// stream whose lease is ttl: long enough that a player retrying the id keeps
// hearing "revoked" rather than being admitted afresh.
func TombstoneTTL(ttl time.Duration) time.Duration { return 10 * ttl }

// MaxTombstones is how many revoked ids a store keeps per user: past it, the
// tombstones that would lapse first go. It bounds what one user flooding
// closes or evictions can make a store hold. A trimmed id is refused no
// longer, but it can only come back into a free slot, as a new stream
// could: the limit holds.
const MaxTombstones = 64

// MaxTTL is the longest lease a store accepts. Longer leases make no sense
// for a slot that a crashed player must give back, and (ten times over, for
// tombstones) they would overflow the stores' clocks.
const MaxTTL = 24 * time.Hour

// Totals are a zone's live users and streams.
type Totals struct {
	Users   int `json:"users"`
	Streams int `json:"streams"`
}

// Clock tells a store the time; tests inject one to drive expiry.
type Clock func() time.Time

func validateKey(key Key) error {
	switch {
	case key.User == "":
		return fmt.Errorf("%w: empty user", ErrBadRequest)
	case len(key.User) > MaxUserLen:
		return fmt.Errorf("%w: user longer than %d bytes", ErrBadRequest, MaxUserLen)
	}
	return nil
}

// parseID checks that a stream id is a UUID in canonical form (lower-case,
// hyphenated), the one form both stores keep and give back alike.
func parseID(id string) (uuid.UUID, error) {
	if c, ok := CanonicalID(id); !ok || c != id {
		return uuid.UUID{}, fmt.Errorf("%w: stream id %q is not a canonical UUID", ErrBadRequest, id)
	}
	return uuid.Parse(id)
}

func sortByStart(leases []Lease) {
	slices.SortStableFunc(leases, func(a, b Lease) int { return a.Started.Compare(b.Started) })
}

func validateLease(key Key, id string, ttl time.Duration) error {
	if _, err := parseID(id); err != nil {
		return err
	}
	switch {
	case ttl <= 0:
		return fmt.Errorf("%w: lease TTL must be positive", ErrBadRequest)
	case ttl > MaxTTL:
		return fmt.Errorf("%w: lease TTL %v is longer than %v", ErrBadRequest, ttl, MaxTTL)
	}
	return validateKey(key)
}

func validateTombstoneTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > TombstoneTTL(MaxTTL) {
		return fmt.Errorf("%w: tombstone TTL %v is not within (0, %v]", ErrBadRequest, ttl, TombstoneTTL(MaxTTL))
	}
	return nil
}
