package caddymodule

// releaseLater ends a stream after its response has gone: a store's round
// trip, or its timeout when it is down, must not hold the client. When the
// queue is full it ends the stream at once.
func (z *zone) releaseLater(ls *localStream) {
	job := func() { ls.end(func() { z.release(ls.ref) }) }
	z.releasing.Add(1)
	select {
	case z.releases <- job:
	default:
		z.releasing.Add(-1)
		job()
	}
}

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
