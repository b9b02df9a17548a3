package lease

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher sends the commands that concurrent callers run (the stores'
// scripts, and the ZREM that frees a lease named whole) as pipelines: one
// write and one read for many calls, in the client and in Redis, whose CPU
// bounds how many leases a Redis can keep (docs/BENCHMARKS.md). A call
// that finds fewer than maxPipelines in flight is sent at once (alone,
// unless unhurried calls wait): batching costs a lone caller nothing, and
// under load calls gather while the pipelines before them are answered. Each call is still one command,
// atomic on its own; a pipeline only shares the round trip.
//
// A call made Unhurried waits in the queue instead, for the next pipeline
// that any other call sends, or for its wait to end: the renewals and
// releases that a Caddy makes beside its requests then share round trips
// even when few are made at once.
type batcher struct {
	client redis.UniversalClient

	mu       sync.Mutex
	queue    []*call
	inFlight int         // pipelines sent and not yet answered
	flush    *time.Timer // sends the unhurried calls queued, if none went sooner
	armed    bool        // flush is set, to fire at due
	due      time.Time
}

// The most pipelines in flight at once, and the most calls in one: a few
// keep Redis busy while the answers to the others travel (2, 4 and 8 gave
// the same rates here), and a bound keeps one caller's wait short.
const (
	maxPipelines = 4
	maxBatch     = 256
)

// call is one caller's command: a script with its keys and arguments, or,
// with no script, the command args. Its answer is in once done is closed.
type call struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	res    any
	err    error
	done   chan struct{}
}

// run runs script as Script.Run would, in a pipeline with other callers',
// and returns its array reply.
func (b *batcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error) {
	res, err := b.submit(&call{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})})
	if err != nil {
		return nil, err
	}
	reply, ok := res.([]any)
	if !ok {
		return nil, fmt.Errorf("lease: script replied %T, want an array", res)
	}
	return reply, nil
}

// do runs the command args, in a pipeline with other callers'.
func (b *batcher) do(ctx context.Context, args ...any) (any, error) {
	return b.submit(&call{ctx: ctx, args: args, done: make(chan struct{})})
}

// submit sends c at once while fewer than maxPipelines are in flight, after
// the unhurried calls queued (alone if none are); or queues it for the
// next pipeline, as it does an unhurried call, for which it arms the flush.
// Then it waits for c's answer.
func (b *batcher) submit(c *call) (any, error) {
	b.mu.Lock()
	switch wait := unhurried(c.ctx); {
	case b.inFlight >= maxPipelines:
		b.queue = append(b.queue, c) // the pipeline answered next takes it
		b.mu.Unlock()
	case wait > 0:
		b.queue = append(b.queue, c)
		// The flush fires when the first wait of those queued ends.
		if due := time.Now().Add(wait); !b.armed || due.Before(b.due) {
			b.armed, b.due = true, due
			if b.flush == nil {
				b.flush = time.AfterFunc(wait, b.flushed)
			} else {
				b.flush.Reset(wait)
			}
		}
		b.mu.Unlock()
	default:
		b.inFlight++
		// After the calls queued before it: a release waiting goes before
		// the start that may need its slot.
		batch := append(b.take(maxBatch-1), c)
		b.mu.Unlock()
		b.send(batch)
		b.next()
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-c.ctx.Done():
		return nil, c.ctx.Err() // (its call may still run, as a call cut short would)
	}
}

// take removes up to n calls from the queue; b.mu is held.
func (b *batcher) take(n int) []*call {
	n = min(len(b.queue), n)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil
	}
	return batch
}

// next sends the calls queued meanwhile, from a goroutine of their own so
// that the caller that sent the last pipeline returns with its answer, or
// ends a pipeline's turn when none are queued.
func (b *batcher) next() {
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.inFlight--
		b.mu.Unlock()
		return
	}
	batch := b.take(maxBatch)
	b.mu.Unlock()
	go b.sendThenNext(batch)
}

// flushed sends the unhurried calls still queued when their wait ends,
// unless every pipeline is in flight: the next answered takes them.
func (b *batcher) flushed() {
	b.mu.Lock()
	b.armed = false
	if len(b.queue) == 0 || b.inFlight >= maxPipelines {
		b.mu.Unlock()
		return
	}
	b.inFlight++
	batch := b.take(maxBatch)
	b.mu.Unlock()
	b.sendThenNext(batch)
}

func (b *batcher) sendThenNext(batch []*call) {
	b.send(batch)
	b.next()
}

// send runs batch and answers each of its calls.
func (b *batcher) send(batch []*call) {
	defer func() {
		for _, c := range batch {
			close(c.done)
		}
	}()
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = c.on(c.ctx, b.client, false).Result()
		return
	}
	ctx, cancel := batchContext(batch)
	defer cancel()
	pipe := b.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = c.on(ctx, pipe, true)
	}
	_, _ = pipe.Exec(ctx) // each command holds its own error
	for i, c := range batch {
		c.res, c.err = cmds[i].Result()
		if c.err != nil && c.script != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			// A Redis that restarted, or a new master: Run loads it.
			c.res, c.err = c.script.Run(ctx, b.client, c.keys, c.args...).Result()
		}
	}
}

// on sends c's command to r: a script by Run to the client (it loads the
// script where Redis lacks it), by EVALSHA into a pipeline.
func (c *call) on(ctx context.Context, r commander, pipelined bool) *redis.Cmd {
	switch {
	case c.script == nil:
		return r.Do(ctx, c.args...)
	case pipelined:
		return c.script.EvalSha(ctx, r, c.keys, c.args...)
	default:
		return c.script.Run(ctx, r, c.keys, c.args...)
	}
}

// commander is what both a client and a pipeline take: scripts and any
// command.
type commander interface {
	redis.Scripter
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// batchContext is the context of a pipeline: cancelled by none of its
// callers (a caller that gives up returns without its answer), and bounded
// by the latest of their deadlines, or by none if one of them has none.
func batchContext(batch []*call) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.WithoutCancel(c.ctx))
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}
