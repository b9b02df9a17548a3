// Package chaos checks the limit over the history of a fleet run under
// faults: what the origin served, what the viewers tried, and what the run
// did to the fleet. The limit is judged from the origin's log alone, never
// from the limiter's own view; the viewers' log only tells a refusal that
// an honest viewer should not have had from one it should, and the fault
// log opens the windows that docs/GUARANTEES.md documents. It knows
// nothing of Caddy, HTTP or Redis: the run (cmd/caddy's TestChaos) records
// the history, and Check reads it.
package chaos

import (
	"fmt"
	"time"
)

// Served is one request the origin served, from its log: from the moment
// its handler began to the moment it returned.
type Served struct {
	Zone string
	User string
	// Stream names the playback the request belongs to: every request of
	// one stream carries the same name, given by the viewer (the stream id
	// never reaches the origin). A viewer that learns at a start that the
	// limiter continued an earlier stream (the same client opening its
	// title again) names the start anew: starts given one id are one
	// stream.
	Stream string
	// Via is the Caddy instance that proxied it.
	Via        string
	Start, End time.Time
	// Media is the playing time a segment held (0 for anything else): its
	// stream is playing from the moment the segment was asked for until
	// the later of its end and that much later, so a player that fetches
	// one segment for each segment it plays counts between its fetches.
	Media time.Duration
}

// Attempt is a viewer's start of a stream, from the viewers' log.
type Attempt struct {
	Zone, User, Stream string
	// ID is the stream id the limiter gave it, when admitted.
	ID string
	// Honest is a viewer whose user never runs more streams at once than
	// the limit: it should never be refused, except as Check allows.
	Honest bool
	At     time.Time
	Status int // 0: no answer (the instance was down or paused)
	// Ended is when the viewer stopped the stream (zero: it ran to the
	// end of the run, or was refused), and Clean whether it said so (a
	// close, or the end of its connection in connection mode) rather than
	// going silent or losing its instance.
	Ended time.Time
	Clean bool
	// MediaEnd, with path_token, is when the media the stream was served
	// would have played out: each segment's media from the later of its
	// fetch and the media before it, as the limiter counts it. A stream
	// that stopped holds its slot until then, and a lease.
	MediaEnd time.Time
	// Cut is a refusal of a stream already playing (409 revoked or
	// replaced, 429 at the limit or shared), at CutAt; 0 for none.
	Cut   int
	CutAt time.Time
	// Shares names, for a shared screen (a machine playing a stream's
	// tokenized URL that it was passed), the stream whose URL it plays.
	// Such a screen is never honest.
	Shares string
}

// Played is when a stream's media runs out once it is served a segment of
// d at now, where it ran out at mediaEnd before: d from the later of the
// two, at most maxBuffer from now. That is how the limiter counts a
// path_token stream's media (every segment served counts, one fetched
// again too), and what Attempt.MediaEnd records.
func Played(mediaEnd, now time.Time, d, maxBuffer time.Duration) time.Time {
	end := laterOf(mediaEnd, now).Add(d)
	if limit := now.Add(maxBuffer); end.After(limit) {
		return limit
	}
	return end
}

// Kinds of event.
const (
	// Faults. Target names the instance, or "redis".
	KillCaddy  = "kill -9 caddy" // killed at Start, running again at End
	PauseCaddy = "pause caddy"   // SIGSTOP at Start, SIGCONT at End
	PauseRedis = "pause redis"
	// Failover: the master killed at Start, a replica promoted by End.
	// Replication is asynchronous: the new master may lack the last
	// admissions, and admit beyond the limit in every zone, until the
	// live streams' next renewals put their leases back.
	Failover  = "failover"
	Partition = "partition" // Target's connections to Redis go nowhere
	Latency   = "latency"   // Target's connections to Redis are slow
	DropConns = "drop"      // Target's connections to Redis are closed
	Reload    = "reload"    // Target's config is loaded again

	// An operator or a viewer ending a stream: Start is when the close
	// was sent (from then on its slot may be free), End when its 204 came
	// (from then on nothing of it may be served, but what another
	// instance serves until its next renewal).
	Close = "close"
	// A per-user limit override set at Start (Limit), or cleared (Limit 0).
	Override = "override"
)

// Event is something the run did, at a time or over a span.
type Event struct {
	Kind       string
	Target     string // the instance, or "redis"
	Zone, User string // Close, Override
	ID         string // Close: the stream id
	Limit      int    // Override: the new limit; 0 clears it
	Start, End time.Time
	// Indeterminate: the action's answer never came (its instance was
	// paused or killed, or its store call timed out), so it may have taken
	// effect at any time from Start on, even after later ones: an
	// instance paused with the request in hand carries it out when it
	// wakes.
	Indeterminate bool
}

func (e Event) String() string {
	out := e.Start.Format("15:04:05.000") + " " + e.Kind
	if e.Target != "" {
		out += " " + e.Target
	}
	if e.User != "" {
		out += " " + e.Zone + "/" + e.User
	}
	switch {
	case e.Kind == Close:
		out += " " + e.ID
	case e.Kind == Override:
		out += fmt.Sprintf(" limit %d", e.Limit)
	}
	if d := e.End.Sub(e.Start); d > 0 {
		out += fmt.Sprintf(" for %v", d.Round(time.Millisecond))
	}
	if e.Indeterminate {
		out += " (no answer: maybe applied, at any time since)"
	}
	return out
}

// Rules are what the fleet promises, from its config.
type Rules struct {
	Limit int           // the zones' limit, without an override
	Lease time.Duration // the zones' lease
	Slack time.Duration // a loaded machine's room on every bound
	// CutWithin is how soon a request of a closed stream that reaches an
	// instance not yet told of the close must end: that instance serves
	// it while the renewal it is due runs beside it, and cuts it when the
	// store answers (within the store's timeout).
	CutWithin time.Duration
	// ShareFetches is how many segments a shared screen may be served
	// beside another player of its stream, through one instance, before
	// the limiter must have told it apart (sharing strict: 4 turns taken
	// back, about 4 fetches each). Players of one stream on different
	// instances are counted by each apart (documented).
	ShareFetches int
}

// together is how close in time two players' fetches of one stream must
// be for them to count as playing side by side.
const together = 3 * time.Second

// renewal is how often a live stream's lease is renewed, and so how long
// a stream revoked on one instance may still be served by another.
func (r Rules) renewal() time.Duration { return r.Lease / 3 }
