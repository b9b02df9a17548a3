package caddymodule

import (
	"time"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// forgetIdleEvery drops local state of streams with no request in flight
// whose lease the store has surely dropped or another process renews: the
// next request of such a stream simply asks the store again. It also sets
// the active-streams gauge.
func (z *zone) forgetIdleEvery(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-z.stop:
			return
		case <-t.C:
			metrics.active.WithLabelValues(z.name).Set(float64(z.sweepIdle(now())))
		}
	}
}

// sweepIdle forgets the idle streams, as of now, and returns how many
// streams are active.
func (z *zone) sweepIdle(now time.Time) (active int) {
	z.streams.each(func(s *streamShard) {
		for ref, ls := range s.m {
			ls.mu.Lock()
			var idle bool
			if ls.revoked {
				idle = len(ls.requests) == 0 && now.Sub(ls.confirmed) > lease.TombstoneTTL(ls.terms.ttl)
			} else {
				held := len(ls.requests) > 0 || ls.keepalive != nil || !now.After(ls.storeUntil)
				idle = !held
				if held {
					active++
				}
			}
			ls.mu.Unlock()
			if idle {
				delete(s.m, ref)
			}
		}
	})
	z.reopens.forget(now, func(user, id string) bool {
		return z.lookup(streamRef{lease.Key{Zone: z.name, User: user}, id}) == nil
	})
	return active
}
