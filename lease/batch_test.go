package lease

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// TestBatchedCallsGetTheirOwnAnswers: calls that share pipelines each get
// the answer to their own script, also after Redis forgot the scripts
// (a restart, a failover), and a caller that gives up returns at once.
func TestBatchedCallsGetTheirOwnAnswers(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	s, _ := NewRedisStore(client, RedisOptions{})
	ctx := context.Background()
	for _, round := range []string{"scripts loaded", "scripts flushed"} {
		if round == "scripts flushed" {
			if err := client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for i := range 300 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k := Key{"batch", round + strconv.Itoa(i%100)} // 3 per user
				id := uuid.NewString()
				d, err := s.Acquire(ctx, AcquireRequest{Key: k, ID: id, Limit: 3, TTL: time.Minute})
				if err != nil || !d.Admitted || d.Lease.ID != id {
					t.Errorf("%s: acquire %s: %+v, %v", round, id, d, err)
					return
				}
				if l, err := s.Renew(ctx, k, id, 2*time.Minute); err != nil || l.ID != id {
					t.Errorf("%s: renew %s: %+v, %v", round, id, l, err)
				}
				if err := s.Release(ctx, k, id); err != nil {
					t.Errorf("%s: release %s: %v", round, id, err)
				}
				if err := s.Release(ctx, k, id); !errors.Is(err, ErrNotFound) {
					t.Errorf("%s: second release of %s: %v, want ErrNotFound", round, id, err)
				}
			}()
		}
		wg.Wait()
	}

	srv.Freeze() // nothing is answered now
	defer srv.Restart(t)
	gone, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := s.Acquire(gone, AcquireRequest{Key: Key{"batch", "frozen"}, ID: uuid.NewString(), Limit: 3, TTL: time.Minute})
	if err == nil {
		t.Fatal("acquire from a frozen Redis succeeded")
	}
}

// pipelineSizes counts what a store sends through a client: the size of
// each pipeline, and the commands sent alone as pipelines of one. (The
// client's own commands on a new connection are not the store's.)
type pipelineSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (p *pipelineSizes) DialHook(next redis.DialHook) redis.DialHook { return next }

func (p *pipelineSizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		p.add([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (p *pipelineSizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.add(cmds)
		return next(ctx, cmds)
	}
}

func (p *pipelineSizes) add(cmds []redis.Cmder) {
	n := 0
	for _, c := range cmds {
		if name := c.Name(); name != "hello" && name != "client" {
			n++
		}
	}
	if n > 0 {
		p.mu.Lock()
		p.sizes = append(p.sizes, n)
		p.mu.Unlock()
	}
}

// take returns the sizes sent since the last take.
func (p *pipelineSizes) take() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	sizes := p.sizes
	p.sizes = nil
	return sizes
}

// TestUnhurriedCallsShareARoundTrip: renewals made Unhurried wait for the
// next call sent, and go with it in one pipeline; with no other call, they
// go together when their wait ends. Each gets its own answer. A release
// made Unhurried goes ahead of the start sent after it, and is sent when
// its own wait ends, not a longer one queued before it.
func TestUnhurriedCallsShareARoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	sent := &pipelineSizes{}
	client.AddHook(sent)
	s, _ := NewRedisStore(client, RedisOptions{})
	ctx := context.Background()
	const n = 10
	keys, ids := make([]Key, n), make([]string, n)
	for i := range n {
		keys[i], ids[i] = Key{"unhurried", strconv.Itoa(i)}, uuid.NewString()
		if _, err := s.Acquire(ctx, AcquireRequest{Key: keys[i], ID: ids[i], Limit: 3, TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Renew(ctx, keys[0], ids[0], time.Minute); err != nil { // loads the script
		t.Fatal(err)
	}
	// queued waits until want calls wait in the store's queue.
	queued := func(want int) {
		t.Helper()
		for {
			s.batch.mu.Lock()
			got := len(s.batch.queue)
			s.batch.mu.Unlock()
			if got == want {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	renewAll := func(wg *sync.WaitGroup) {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// An hour's wait: only another call, or the flush, sends them.
				l, err := s.Renew(Unhurried(ctx, time.Hour), keys[i], ids[i], 2*time.Minute)
				if err != nil || l.ID != ids[i] {
					t.Errorf("unhurried renewal of %s: %+v, %v", ids[i], l, err)
				}
			}()
		}
	}

	for _, then := range []string{"another call", "the wait's end"} {
		sent.take()
		var wg sync.WaitGroup
		renewAll(&wg)
		queued(n)
		if got := sent.take(); len(got) != 0 {
			t.Fatalf("before %s: sent %v, want nothing", then, got)
		}
		switch then {
		case "another call":
			if _, err := s.Renew(ctx, keys[0], ids[0], 2*time.Minute); err != nil {
				t.Fatal(err)
			}
		case "the wait's end":
			s.batch.flush.Reset(0) // the hour is up
		}
		wg.Wait()
		want := n
		if then == "another call" {
			want = n + 1
		}
		if got := sent.take(); len(got) != 1 || got[0] != want {
			t.Errorf("after %s: sent %v, want one pipeline of %d", then, got, want)
		}
	}

	// A release waiting goes ahead of the start sent after it, which finds
	// its slot free: a user at the limit who ends a stream and starts
	// another is admitted. (With its script loaded: a script that Redis
	// forgot, after a restart, is loaded after its pipeline and runs then.)
	if err := s.Release(ctx, keys[1], ids[1]); err != nil { // loads the script
		t.Fatal(err)
	}
	full := Key{"unhurried", "full"}
	for i := range 3 {
		if d, err := s.Acquire(ctx, AcquireRequest{Key: full, ID: ids[i], Limit: 3, TTL: time.Minute}); err != nil || !d.Admitted {
			t.Fatalf("filling: %+v, %v", d, err)
		}
	}
	sent.take()
	released := make(chan error, 1)
	go func() { released <- s.Release(Unhurried(ctx, time.Hour), full, ids[0]) }()
	queued(1)
	d, err := s.Acquire(ctx, AcquireRequest{Key: full, ID: uuid.NewString(), Limit: 3, TTL: time.Minute})
	if err != nil || !d.Admitted {
		t.Fatalf("a start after a release waiting, at the limit: %+v, %v; want admitted", d, err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if got := sent.take(); len(got) != 1 || got[0] != 2 {
		t.Errorf("the release and the start: sent %v, want one pipeline of 2", got)
	}

	// A call whose wait ends first is not held to the wait of one queued
	// before it: a release's milliseconds, behind a renewal's hour.
	renewed := make(chan error, 1)
	go func() {
		_, err := s.Renew(Unhurried(ctx, time.Hour), keys[2], ids[2], time.Minute)
		renewed <- err
	}()
	queued(1)
	if err := s.Release(Unhurried(ctx, time.Millisecond), full, ids[1]); err != nil {
		t.Fatalf("a release with a short wait, behind a renewal with a long one: %v", err)
	}
	if err := <-renewed; err != nil {
		t.Fatal(err)
	}
}
