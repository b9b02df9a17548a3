package caddymodule

import (
	"errors"
	"hash/maphash"
	"net/http"
	pathpkg "path"
	"strconv"
	"strings"
	"time"

	"github.com/streamlimit/caddy-streamlimit/lease"
	"github.com/streamlimit/caddy-streamlimit/playhead"
)

// One stream, one screen. A stream's tokenized URLs can be passed to other
// machines; the players there fetch the stream's segments as its own
// player does. Package playhead tells them apart by the positions they
// fetch (never by address). Every player beyond the first is a screen of
// its own: it takes a slot of the user's, under an id of its own (a
// screen lease, renewed while it fetches), and is refused when none is
// free, while the first plays on. A restart of the same title by the same
// client (a reload) continues its stream (reopen.go), and takes the place
// of the player of before: if that one still fetches once the restarted
// one plays (a reload whose old tab plays on), it gets 409
// stream_replaced.

// sharingRules are the playhead rules of a sharing strictness.
func sharingRules(strictness string) playhead.Rules {
	switch strictness {
	case SharingOff:
		return playhead.Rules{}
	case SharingLenient:
		return playhead.Rules{Turns: 8, Within: 3 * time.Minute}
	}
	return playhead.Rules{Turns: 4, Within: 2 * time.Minute}
}

// screenLease is the slot a screen beyond a stream's first holds.
type screenLease struct {
	head      uint32 // its playhead
	id        string
	confirmed time.Time // when the store last carried its lease
}

// fetched places a fetch of the stream's main track at p among its
// playheads.
func (ls *localStream) fetched(p playhead.Position, client uint64, r playhead.Rules) playhead.Fetch {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.heads == nil {
		ls.heads = new(playhead.Tracker)
	}
	return ls.heads.Fetched(p, client, now(), r)
}

// restart notes that client opened the stream's title again.
func (ls *localStream) restart(client uint64) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.restarted = now()
	if ls.heads != nil {
		ls.heads.Restart(ls.restarted, client)
	}
}

// restartedAt is when the stream's client last opened its title again.
func (ls *localStream) restartedAt() time.Time {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.restarted
}

// refused notes that a fetch was refused: its player stays one.
func (ls *localStream) refused(f playhead.Fetch) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.heads != nil {
		ls.heads.Refused(f)
	}
}

// screenFor returns the id of the screen lease of a playhead (made now if
// it has none) and whether its lease is due to be carried on (it never
// was, or not within every).
func (ls *localStream) screenFor(head uint32, newID func() string, every time.Duration) (id string, due bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for i := range ls.screens {
		if s := &ls.screens[i]; s.head == head {
			return s.id, s.confirmed.IsZero() || now().Sub(s.confirmed) >= every
		}
	}
	if len(ls.screens) >= playhead.MaxHeads {
		ls.screens = ls.screens[1:] // its lease lapses by itself
	}
	ls.screens = append(ls.screens, screenLease{head: head, id: newID()})
	return ls.screens[len(ls.screens)-1].id, true
}

// screenHeld records that the store carried a screen's lease.
func (ls *localStream) screenHeld(id string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for i := range ls.screens {
		if ls.screens[i].id == id {
			ls.screens[i].confirmed = now()
		}
	}
}

// screenIDs lists the ids of the stream's screen leases.
func (ls *localStream) screenIDs() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ids := make([]string, len(ls.screens))
	for i, s := range ls.screens {
		ids[i] = s.id
	}
	return ids
}

// oneScreen places a fetch of a segment of the stream's main track among
// its players, and refuses it (answered true) when it is a player beyond
// the first for which the user has no slot free.
func (h *Handler) oneScreen(w http.ResponseWriter, r *http.Request, ls *localStream, ref streamRef, limit int) (answered bool, err error) {
	if h.sharing.Turns == 0 {
		return false, nil
	}
	pos, ok := playhead.Of(pathpkg.Base(r.URL.Path), rangeStart(r.Header.Get("Range")))
	if !ok {
		return false, nil // every fetch alike: nothing tells players apart
	}
	f := ls.fetched(pos, clientHint(r, h.Client), h.sharing)
	if f.Replaced {
		ls.refused(f)
		// It names the screen that took its place: when it started again
		// and on what kind of client.
		return true, h.refuse(w, r, http.StatusConflict, errorBody{Error: "stream_replaced",
			Screens: []screenBody{{Started: ls.restartedAt().UTC().Format(time.RFC3339), Client: ls.clientKind()}}})
	}
	if f.Screen <= 1 {
		return false, nil
	}
	secret, err := h.idSecretFor(r)
	if err != nil {
		return false, nil // the store is down: played as the stream is (on_store_error)
	}
	id, due := ls.screenFor(f.Head, func() string { return lease.NewID(secret, ref.key) }, renewEvery(h.ttl()))
	if !due {
		return false, nil
	}
	ctx, cancel := h.storeContext(r)
	d, err := h.zone.renew(ctx, streamRef{ref.key, id}, h.ttl(), limit)
	cancel()
	switch {
	case err == nil && d.Admitted:
		ls.screenHeld(id)
		return false, nil
	case errors.Is(err, lease.ErrRevoked):
		ls.refused(f) // the screen was kicked or closed
		return true, h.refuse(w, r, http.StatusConflict, errorBody{Error: "stream_revoked"})
	case err != nil:
		if h.OnStoreError == OnStoreErrorDeny {
			ls.refused(f)
			return true, h.refuse(w, r, http.StatusServiceUnavailable, errorBody{Error: "store_unavailable"})
		}
		return false, nil
	}
	if h.DryRun {
		return false, h.overLimit(w, r, nil, ref.key, d, "stream_shared") // counted, marked, served
	}
	ls.refused(f)
	return true, h.overLimit(w, r, nil, ref.key, d, "stream_shared")
}

// rangeStart is the first byte a Range header asks for, or -1 for none
// (or one that is not a plain "bytes=N-").
func rangeStart(v string) int64 {
	spec, ok := strings.CutPrefix(v, "bytes=")
	if !ok {
		return -1
	}
	first, _, ok := strings.Cut(spec, "-")
	n, err := strconv.ParseInt(first, 10, 64)
	if !ok || err != nil || n < 0 {
		return -1
	}
	return n
}

// clientHint names, for package playhead, the client a request came from:
// who reopen.go takes it for, hashed. It only tells which of the players
// near one place made a fetch; it never counts one.
func clientHint(r *http.Request, clientPlaceholder string) uint64 {
	client, agent := clientOf(r, clientPlaceholder)
	var h maphash.Hash
	h.SetSeed(hintSeed)
	h.WriteString(client)
	h.WriteByte(0)
	h.WriteString(agent)
	return h.Sum64() | 1 // never 0, which is "unknown"
}

var hintSeed = maphash.MakeSeed()
