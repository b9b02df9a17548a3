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
	// never reaches the origin).
	Stream string
	// Via is the Caddy instance that proxied it.
	Via        string
	Start, End time.Time
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
}

// renewal is how often a live stream's lease is renewed, and so how long
// a stream revoked on one instance may still be served by another.
func (r Rules) renewal() time.Duration { return r.Lease / 3 }
