package caddymodule

import (
	"context"
	"time"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// releaseLater ends a stream after its response has gone: a store's round
// trip, or its timeout when it is down, must not hold the client. When the
// queue is full it ends the stream at once. The release may wait a little
// in the store's queue (releaseWait) to share a round trip: with the next
// start this process sends, which it goes before, or with other releases.
func (z *zone) releaseLater(ls *localStream) {
	job := func() {
		ls.end(func() { z.releaseIn(lease.Unhurried(context.Background(), releaseWait), ls.ref, causeConnectionEnd) })
	}
	z.releasing.Add(1)
	select {
	case z.releases <- job:
	default:
		z.releasing.Add(-1)
		job()
	}
}

// releaseWait is how long a release after a response may wait to be sent
// with other calls: short, because until it is sent its slot is taken for
// a start that another process sends.
const releaseWait = 2 * time.Millisecond

// releaseWorkers run a zone's queued releases: several, so that a store
// that batches concurrent calls (Redis) sends a burst of releases in few
// round trips, and one slow call does not hold the others back.
const releaseWorkers = 8

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
