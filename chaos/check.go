package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Report is what Check found in a history.
type Report struct {
	Requests, Streams, Users int
	Faults                   map[string]int           // events by kind
	LongestFault             map[string]time.Duration // the longest of each kind

	// Violations are the spans in which a user had more distinct streams
	// being served at the origin than the bound, outside every documented
	// window. The goal is none.
	Violations []Span
	// Excused are the spans over the bound that lie wholly inside
	// documented windows, each named by the windows' kinds.
	Excused []Span
	// ServedAfterClose are requests of a closed or kicked stream that the
	// origin served past the close plus one renewal interval (and the
	// slack): the time another instance may take to learn of it.
	ServedAfterClose []Served
	// WrongfulRefusals are honest viewers' starts refused while their user
	// held fewer streams than the limit, outside every window. Refused
	// lists every refusal of an honest viewer, wrongful or not.
	WrongfulRefusals []Attempt
	Refused          int
	HonestStarts     int
	// RefusedInFaults are the honest refusals a fault explains; the rest
	// of Refused came with the user's slots held.
	RefusedInFaults int
}

// Span is a time in which one user's streams at the origin exceeded the
// bound.
type Span struct {
	Zone, User string
	From, To   time.Time
	Bound      int
	Streams    []string // the streams being served at the span's worst
	Windows    []string // the windows it lies in, when excused
	// Context, for a violation, are the events a lease and a renewal
	// interval (and the slack) before it and during it: the faults, and
	// the user's closes and overrides.
	Context []Event
}

func (s Span) String() string {
	w := ""
	if len(s.Windows) > 0 {
		w = " in " + strings.Join(s.Windows, ", ")
	}
	return fmt.Sprintf("%s/%s: %d streams > %d for %v from %s%s: %s",
		s.Zone, s.User, len(s.Streams), s.Bound, s.To.Sub(s.From).Round(time.Millisecond),
		s.From.Format("15:04:05.000"), w, strings.Join(s.Streams, " "))
}

// LongestExcused is the longest span over the bound that a window
// excused, and the window's kinds.
func (r Report) LongestExcused() Span {
	var longest Span
	for _, s := range r.Excused {
		if s.To.Sub(s.From) > longest.To.Sub(longest.From) {
			longest = s
		}
	}
	return longest
}

// OK is whether the history shows the limit kept: no violation, no
// closed stream served on, no wrongful refusal.
func (r Report) OK() bool {
	return len(r.Violations) == 0 && len(r.ServedAfterClose) == 0 && len(r.WrongfulRefusals) == 0
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checked %d requests of %d streams of %d users; faults and actions:", r.Requests, r.Streams, r.Users)
	kinds := make([]string, 0, len(r.Faults))
	for k := range r.Faults {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, " %s %d", k, r.Faults[k])
		if d := r.LongestFault[k]; d > 0 {
			fmt.Fprintf(&b, " (longest %v)", d.Round(10*time.Millisecond))
		}
		b.WriteString(";")
	}
	fmt.Fprintf(&b, "\nviolations outside documented windows: %d\n", len(r.Violations))
	for i, s := range r.Violations {
		if i == maxListed {
			fmt.Fprintf(&b, "  and %d more\n", len(r.Violations)-i)
			break
		}
		fmt.Fprintf(&b, "  %s\n", s)
		for _, e := range s.Context {
			fmt.Fprintf(&b, "    %s\n", e)
		}
	}
	fmt.Fprintf(&b, "over the limit inside documented windows: %d", len(r.Excused))
	if l := r.LongestExcused(); len(l.Streams) > 0 {
		fmt.Fprintf(&b, "; the longest %v, in %s", l.To.Sub(l.From).Round(time.Millisecond), strings.Join(l.Windows, ", "))
	}
	fmt.Fprintf(&b, "\nclosed streams served past a renewal interval: %d\n", len(r.ServedAfterClose))
	for _, s := range r.ServedAfterClose {
		fmt.Fprintf(&b, "  %s/%s %s via %s, %s to %s\n", s.Zone, s.User, s.Stream, s.Via, s.Start.Format("15:04:05.000"), s.End.Format("15:04:05.000"))
	}
	fmt.Fprintf(&b, "honest starts: %d; refused: %d (in faults %d, the user's slots held %d), wrongfully: %d\n",
		r.HonestStarts, r.Refused, r.RefusedInFaults, r.Refused-r.RefusedInFaults-len(r.WrongfulRefusals), len(r.WrongfulRefusals))
	for _, a := range r.WrongfulRefusals {
		fmt.Fprintf(&b, "  %s/%s %s at %s: %d\n", a.Zone, a.User, a.Stream, a.At.Format("15:04:05.000"), a.Status)
	}
	return b.String()
}

// maxListed is how many violations String lists.
const maxListed = 20

// window is a span of time in which the fleet documents weaker promises.
type window struct {
	kind     string
	from, to time.Time
}

// windows are the spans in which a user may be over the limit, each until
// one renewal interval after it ends, when the streams over the limit are
// cut: a paused instance (its streams' leases lapse while the origin
// still serves them, until it renews again); a failover (the new master
// may lack the last admissions); and a store fault. Under a store fault
// an instance that cannot reach the store serves its live streams on
// while their leases lapse, and other instances may give the slots to new
// streams, whatever on_store_error says; with allow, its own starts also
// pass unlimited.
func (r Rules) windows(events []Event) []window {
	var out []window
	for _, e := range events {
		switch e.Kind {
		case PauseCaddy, Failover, PauseRedis, Partition, Latency, DropConns:
			out = append(out, window{kind: e.Kind + " " + e.Target, from: e.Start, to: e.End.Add(r.renewal() + r.Slack)})
		}
	}
	return out
}

// covering are the kinds of the windows that together cover [from, to],
// or nil when they do not.
func covering(ws []window, from, to time.Time) []string {
	var in []window
	for _, w := range ws {
		if !w.to.Before(from) && !w.from.After(to) {
			in = append(in, w)
		}
	}
	slices.SortFunc(in, func(a, b window) int { return a.from.Compare(b.from) })
	reached := from
	var kinds []string
	for _, w := range in {
		if w.from.After(reached) {
			break // a gap: what follows does not cover it
		}
		if !slices.Contains(kinds, w.kind) {
			kinds = append(kinds, w.kind)
		}
		if w.to.After(reached) {
			reached = w.to
		}
	}
	if reached.Before(to) {
		return nil
	}
	return kinds
}

// limits answers what a user's limit was.
type limits struct {
	def       int
	overrides map[[2]string][]Event // by zone and user, in time order
}

// at is the limit the answered overrides set by t.
func (l limits) at(zone, user string, t time.Time) int {
	n := l.def
	for _, e := range l.overrides[[2]string{zone, user}] {
		if e.Start.After(t) {
			break
		}
		if !e.Indeterminate {
			n = cmp0(e.Limit, l.def)
		}
	}
	return n
}

// most is the highest limit the user may have had at any time in [from,
// to]: a stream admitted under a higher limit plays on when it is
// lowered, and an override never answered may have taken effect at any
// time since it was asked for.
func (l limits) most(zone, user string, from, to time.Time) int {
	return l.extreme(zone, user, from, to, func(a, b int) int { return max(a, b) })
}

// least is the lowest limit the user may have had at any time in [from,
// to].
func (l limits) least(zone, user string, from, to time.Time) int {
	return l.extreme(zone, user, from, to, func(a, b int) int { return min(a, b) })
}

func (l limits) extreme(zone, user string, from, to time.Time, pick func(a, b int) int) int {
	n := l.at(zone, user, from)
	for _, e := range l.overrides[[2]string{zone, user}] {
		if !e.Start.After(to) && (e.Indeterminate || e.Start.After(from)) {
			n = pick(n, cmp0(e.Limit, l.def))
		}
	}
	return n
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Check reads a history: what the origin served, the viewers' starts, and
// the events of the run.
func Check(rules Rules, served []Served, attempts []Attempt, events []Event) Report {
	rep := Report{Requests: len(served), Faults: map[string]int{}, LongestFault: map[string]time.Duration{}}
	for _, e := range events {
		rep.Faults[e.Kind]++
		rep.LongestFault[e.Kind] = max(rep.LongestFault[e.Kind], e.End.Sub(e.Start))
	}
	lim := limits{def: rules.Limit, overrides: map[[2]string][]Event{}}
	for _, e := range events {
		if e.Kind == Override {
			k := [2]string{e.Zone, e.User}
			lim.overrides[k] = append(lim.overrides[k], e)
		}
	}
	for _, evs := range lim.overrides {
		slices.SortFunc(evs, func(a, b Event) int { return a.Start.Compare(b.Start) })
	}
	ws := rules.windows(events)

	// A closed stream may be served on until its instance learns of the
	// close: on the instance that closed it at once, on another at its
	// next renewal. It is counted until the close was sent (its slot may
	// be free from then on); served past the renewal interval after the
	// 204, it is reported.
	type closing struct{ sent, done time.Time }
	closedAt := map[string]closing{} // stream name -> its first close
	names := map[string]string{}     // stream id -> stream name
	for _, a := range attempts {
		if a.ID != "" {
			names[a.Zone+"\x00"+a.ID] = a.Stream
		}
	}
	for _, e := range events {
		if e.Kind != Close {
			continue
		}
		if name, ok := names[e.Zone+"\x00"+e.ID]; ok {
			if c, seen := closedAt[name]; !seen || e.Start.Before(c.sent) {
				closedAt[name] = closing{e.Start, e.End}
			}
		}
	}
	type point struct {
		t      time.Time
		start  bool
		stream string
	}
	byUser := map[[2]string][]point{}
	first := map[string]time.Time{} // stream -> its first request at the origin
	for _, s := range served {
		from, to := s.Start, s.End
		if c, ok := closedAt[s.Stream]; ok {
			if to.After(c.done.Add(rules.renewal() + rules.Slack)) {
				rep.ServedAfterClose = append(rep.ServedAfterClose, s)
			}
			to = minTime(to, c.sent)
			if !from.Before(to) {
				continue
			}
		}
		if f, ok := first[s.Stream]; !ok || from.Before(f) {
			first[s.Stream] = from
		}
		k := [2]string{s.Zone, s.User}
		byUser[k] = append(byUser[k], point{from, true, s.Stream}, point{to, false, s.Stream})
	}
	rep.Users, rep.Streams = len(byUser), len(first)

	for k, pts := range byUser {
		zone, user := k[0], k[1]
		// Ends before starts at the same instant: a request that ends as
		// another begins is no overlap.
		slices.SortFunc(pts, func(a, b point) int {
			if c := a.t.Compare(b.t); c != 0 {
				return c
			}
			switch {
			case a.start == b.start:
				return 0
			case a.start:
				return 1
			}
			return -1
		})
		active := map[string]int{}
		var open *Span
		closeSpan := func(at time.Time) {
			open.To = at
			if kinds := covering(ws, open.From, open.To); kinds != nil {
				open.Windows = kinds
				rep.Excused = append(rep.Excused, *open)
			} else {
				rep.Violations = append(rep.Violations, *open)
			}
			open = nil
		}
		for _, p := range pts {
			if p.start {
				active[p.stream]++
			} else if active[p.stream]--; active[p.stream] == 0 {
				delete(active, p.stream)
			}
			oldest := p.t
			for s := range active {
				oldest = minTime(oldest, first[s])
			}
			bound := lim.most(zone, user, oldest, p.t)
			switch {
			case len(active) > bound && open == nil:
				open = &Span{Zone: zone, User: user, From: p.t, Bound: bound, Streams: sortedKeys(active)}
			case len(active) > bound && len(active) > len(open.Streams):
				open.Streams = sortedKeys(active)
			case len(active) <= bound && open != nil:
				closeSpan(p.t)
			}
		}
		if open != nil {
			closeSpan(pts[len(pts)-1].t)
		}
	}
	sortSpans(rep.Violations)
	sortSpans(rep.Excused)
	for i, v := range rep.Violations {
		since := v.From.Add(-rules.Lease - rules.renewal() - rules.Slack)
		for _, e := range events {
			mine := e.Zone == v.Zone && e.User == v.User
			if (mine || e.Zone == "") && !e.End.Before(since) && !e.Start.After(v.To) {
				rep.Violations[i].Context = append(rep.Violations[i].Context, e)
			}
		}
		slices.SortFunc(rep.Violations[i].Context, func(a, b Event) int { return a.Start.Compare(b.Start) })
	}

	rep.Refused, rep.RefusedInFaults, rep.WrongfulRefusals = rules.refusals(attempts, events, lim)
	for _, a := range attempts {
		if a.Honest {
			rep.HonestStarts++
		}
	}
	return rep
}

// refusals counts honest viewers' refused starts, and returns those that
// came while their user held fewer streams than the limit and no fault
// could explain them: an instance killed or paused, or a store fault,
// until a renewal interval after it ends. A stream the viewer left
// without a word, or that broke (its instance went away), holds its slot
// for a lease and a renewal interval after it ended (and the slack); one
// it closed, for a renewal interval.
func (r Rules) refusals(attempts []Attempt, events []Event, lim limits) (refused, inFaults int, wrongful []Attempt) {
	var faults []window
	for _, e := range events {
		switch e.Kind {
		case KillCaddy, PauseCaddy, PauseRedis, Failover, Partition, Latency, DropConns:
			faults = append(faults, window{from: e.Start, to: e.End.Add(r.renewal() + r.Slack)})
		}
	}
	admitted := map[[2]string][]Attempt{} // by zone and user
	for _, b := range attempts {
		if b.Status >= 200 && b.Status <= 299 {
			k := [2]string{b.Zone, b.User}
			admitted[k] = append(admitted[k], b)
		}
	}
	for _, a := range attempts {
		if !a.Honest || (a.Status != statusAtLimit && a.Status != statusStoreDown) {
			continue
		}
		refused++
		if slices.ContainsFunc(faults, func(w window) bool { return !a.At.Before(w.from) && !a.At.After(w.to) }) {
			inFaults++
			continue
		}
		held := 0
		for _, b := range admitted[[2]string{a.Zone, a.User}] {
			if b.At.After(a.At) {
				continue
			}
			grace := r.Lease + r.renewal() + r.Slack
			if b.Clean {
				grace = r.renewal() // its release, sent after the response
			}
			if b.Ended.IsZero() || !a.At.After(b.Ended.Add(grace)) {
				held++
			}
		}
		if held < lim.least(a.Zone, a.User, a.At.Add(-r.Lease-r.Slack), a.At) {
			wrongful = append(wrongful, a)
		}
	}
	return refused, inFaults, wrongful
}

// The refusals a start may get: at the limit, and with the store down
// under on_store_error deny.
const (
	statusAtLimit   = 429
	statusStoreDown = 503
)

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortSpans(s []Span) {
	slices.SortFunc(s, func(a, b Span) int { return a.From.Compare(b.From) })
}
