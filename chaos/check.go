package chaos

import (
	"cmp"
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
	// slack): the time another instance may take to learn of it; or, for
	// a request asked for later still, past CutWithin. CutAfterClose
	// counts those later requests that were cut in time.
	ServedAfterClose []Served
	CutAfterClose    int
	// WrongfulRefusals are honest viewers' starts refused while their user
	// held fewer streams than the limit, outside every window. Refused
	// lists every refusal of an honest viewer, wrongful or not.
	WrongfulRefusals []Attempt
	Refused          int
	HonestStarts     int
	// RefusedInFaults are the honest refusals a fault explains; the rest
	// of Refused came with the user's slots held.
	RefusedInFaults int
	// WrongfulCuts are honest streams refused while they played, neither
	// closed nor kicked before, outside every fault.
	WrongfulCuts []Attempt
	// SharedScreens are the machines that played a stream's URL they were
	// passed; SharedRefused those of them refused at the limit.
	SharedScreens, SharedRefused int
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
	return len(r.Violations) == 0 && len(r.ServedAfterClose) == 0 && len(r.WrongfulRefusals) == 0 && len(r.WrongfulCuts) == 0
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
	if len(r.Excused) > 0 {
		byKind := map[string]int{}
		for _, s := range r.Excused {
			for _, w := range s.Windows {
				// A window is named by its kind and its target.
				i := slices.IndexFunc(windowKinds, func(k string) bool { return strings.HasPrefix(w, k) })
				if i >= 0 {
					w = windowKinds[i]
				}
				byKind[w]++
			}
		}
		kinds := make([]string, 0, len(byKind))
		for k := range byKind {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds)
		for i, k := range kinds {
			kinds[i] = fmt.Sprintf("%s %d", k, byKind[k])
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(kinds, ", "))
	}
	if l := r.LongestExcused(); len(l.Streams) > 0 {
		fmt.Fprintf(&b, "; the longest %v, in %s", l.To.Sub(l.From).Round(time.Millisecond), strings.Join(l.Windows, ", "))
	}
	fmt.Fprintf(&b, "\nclosed streams served past a renewal interval: %d (requests asked for later, cut within a store call: %d)\n", len(r.ServedAfterClose), r.CutAfterClose)
	for _, s := range r.ServedAfterClose {
		fmt.Fprintf(&b, "  %s/%s %s via %s, %s to %s\n", s.Zone, s.User, s.Stream, s.Via, s.Start.Format("15:04:05.000"), s.End.Format("15:04:05.000"))
	}
	fmt.Fprintf(&b, "honest starts: %d; refused: %d (in faults %d, the user's slots held %d), wrongfully: %d\n",
		r.HonestStarts, r.Refused, r.RefusedInFaults, r.Refused-r.RefusedInFaults-len(r.WrongfulRefusals), len(r.WrongfulRefusals))
	for _, a := range r.WrongfulRefusals {
		fmt.Fprintf(&b, "  %s/%s %s at %s: %d\n", a.Zone, a.User, a.Stream, a.At.Format("15:04:05.000"), a.Status)
	}
	fmt.Fprintf(&b, "honest streams cut while playing, wrongfully: %d\n", len(r.WrongfulCuts))
	for _, a := range r.WrongfulCuts {
		fmt.Fprintf(&b, "  %s/%s %s (%s) at %s: %d\n", a.Zone, a.User, a.Stream, a.ID, a.CutAt.Format("15:04:05.000"), a.Cut)
	}
	if r.SharedScreens > 0 {
		fmt.Fprintf(&b, "shared screens (a stream's URL passed on): %d, refused at the limit %d\n", r.SharedScreens, r.SharedRefused)
	}
	return b.String()
}

// windowKinds are the kinds of window a span over the limit may lie in.
var windowKinds = []string{PauseCaddy, PauseRedis, Failover, Partition, Latency, DropConns, notToldApart, acrossInstances}

// maxListed is how many violations String lists.
const maxListed = 20

// window is a span of time in which the fleet documents weaker promises.
type window struct {
	kind     string
	target   string // the instance, or "redis …": every instance
	from, to time.Time
}

// stalls reports whether the window keeps instance from hearing of a
// close: the instance paused, or its way to the store, or the store, down.
func (w window) stalls(instance string) bool {
	return w.target == instance || strings.HasPrefix(w.target, "redis")
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
			out = append(out, window{kind: e.Kind + " " + e.Target, target: e.Target, from: e.Start, to: e.End.Add(r.renewal() + r.Slack)})
		}
	}
	return out
}

// heardBy is when instance must have heard of a close it would have
// heard of by by, were it not for the windows that stall it: each one
// that begins by then puts it off until the window's end.
func heardBy(ws []window, instance string, by time.Time) time.Time {
	for moved := true; moved; {
		moved = false
		for _, w := range ws {
			if w.stalls(instance) && !w.from.After(by) && w.to.After(by) {
				by, moved = w.to, true
			}
		}
	}
	return by
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
	served, attempts = oneNamePerStream(served, attempts)
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
		if a.ID != "" && a.Shares == "" {
			names[a.Zone+"\x00"+a.ID] = a.Stream
		}
	}
	// A close of an id no viewer was given (a shared screen's own slot,
	// which the limiter lists with the user's streams) frees a slot the
	// origin's log cannot name: the user may have one stream more than
	// the bound until the screen's player is cut, at its instance's next
	// renewal.
	freed := map[[2]string][]window{} // by zone and user
	for _, e := range events {
		if e.Kind != Close {
			continue
		}
		name, ok := names[e.Zone+"\x00"+e.ID]
		if !ok {
			k := [2]string{e.Zone, e.User}
			freed[k] = append(freed[k], window{kind: Close, from: e.Start, to: e.End.Add(rules.renewal() + rules.Slack)})
			continue
		}
		if c, seen := closedAt[name]; !seen || e.Start.Before(c.sent) {
			closedAt[name] = closing{e.Start, e.End}
		}
	}
	// A stream's shared screens play its id: closed with it.
	for _, a := range attempts {
		if c, ok := closedAt[a.Shares]; ok && a.Shares != "" {
			if mine, seen := closedAt[a.Stream]; !seen || c.sent.Before(mine.sent) {
				closedAt[a.Stream] = c
			}
		}
	}
	unseen := rules.unseenShares(served, attempts)
	byUser := map[[2]string][]point{}
	first := map[string]time.Time{} // stream -> its first request at the origin
	for i, s := range served {
		from, to := s.Start, s.End
		if played := s.Start.Add(s.Media); played.After(to) {
			to = played
		}
		if c, ok := closedAt[s.Stream]; ok {
			// Served past the close's 204 and a renewal interval, or, when
			// asked for later, past the store call that cuts it; later
			// still where its instance could not hear of the close (it was
			// paused, or the store out of its reach), until a renewal
			// interval after it could.
			if by := heardBy(ws, s.Via, c.done.Add(rules.renewal()+rules.Slack)); s.End.After(laterOf(by, s.Start.Add(rules.CutWithin))) {
				rep.ServedAfterClose = append(rep.ServedAfterClose, s)
			} else if s.Start.After(by) {
				rep.CutAfterClose++
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
		why, skip := unseen[i]
		byUser[k] = append(byUser[k], point{from, true, s.Stream, !skip, why}, point{to, false, s.Stream, !skip, why})
	}
	rep.Users, rep.Streams = len(byUser), len(first)
	for k, pts := range byUser {
		u := userSweep{zone: k[0], user: k[1], windows: ws, limits: lim, first: first, freed: freed[k], rep: &rep}
		u.sweep(pts)
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

	rep.Refused, rep.RefusedInFaults, rep.WrongfulRefusals, rep.WrongfulCuts = rules.refusals(attempts, events, lim)
	for _, a := range attempts {
		switch {
		case a.Honest:
			rep.HonestStarts++
		case a.Shares != "":
			rep.SharedScreens++
			if a.Cut == statusAtLimit || a.Status == statusAtLimit {
				rep.SharedRefused++
			}
		}
	}
	return rep
}

// point is a request of a stream beginning or ending at the origin.
type point struct {
	t       time.Time
	start   bool
	stream  string
	counted bool   // false: a shared screen the limiter need not have told apart yet
	why     string // why not counted
}

// userSweep judges one user's streams at the origin over time.
type userSweep struct {
	zone, user string
	windows    []window
	limits     limits
	first      map[string]time.Time // stream -> its first request
	freed      []window             // slots freed that the origin's log cannot name
	rep        *Report

	// all counts every stream being served; counted leaves out the shared
	// screens the limiter need not have told apart yet. A span over the
	// bound in counted is a violation unless a fault's window covers it;
	// one over it in all alone is excused by the sharing rule, named by
	// why its screens were not counted.
	all, counted spanner
	uncounted    map[string]string // streams served uncounted in all's span, and why
	countedOver  bool              // whether counted went over the bound in all's span
}

func (u *userSweep) sweep(pts []point) {
	slices.SortFunc(pts, func(a, b point) int { return a.t.Compare(b.t) })
	u.all = spanner{zone: u.zone, user: u.user}
	u.counted = spanner{zone: u.zone, user: u.user}
	u.uncounted = map[string]string{}
	// The points of one instant are taken together: a stream whose request
	// ends as its next begins plays on, and one that ends as another
	// begins is no overlap.
	for i, p := range pts {
		u.all.step(p.stream, p.start)
		if p.counted {
			u.counted.step(p.stream, p.start)
		} else if p.start {
			u.uncounted[p.stream] = p.why
		}
		if i+1 < len(pts) && pts[i+1].t.Equal(p.t) {
			continue
		}
		bound := u.bound(p.t)
		a := u.all.judge(p.t, bound)
		u.judged(u.counted.judge(p.t, bound), a)
	}
	last := pts[len(pts)-1].t
	a := u.all.closeAt(last)
	u.judged(u.counted.closeAt(last), a)
}

// bound is the most streams the user may have had being served at t: the
// highest limit since the oldest of them started, and one more for each
// slot freed that the log cannot name.
func (u *userSweep) bound(t time.Time) int {
	oldest := t
	for s := range u.all.active {
		oldest = minTime(oldest, u.first[s])
	}
	bound := u.limits.most(u.zone, u.user, oldest, t)
	for _, w := range u.freed {
		if !t.Before(w.from) && !t.After(w.to) {
			bound++
		}
	}
	return bound
}

// judged reports the spans that closed: c, over the bound in counted; a,
// over it in all.
func (u *userSweep) judged(c, a *Span) {
	if c != nil {
		if kinds := covering(u.windows, c.From, c.To); kinds != nil {
			c.Windows = kinds
			u.rep.Excused = append(u.rep.Excused, *c)
		} else {
			u.rep.Violations = append(u.rep.Violations, *c)
		}
	}
	if c != nil || u.counted.open != nil {
		u.countedOver = true
	}
	if a != nil && !u.countedOver {
		a.Windows = sortedValues(u.uncounted)
		u.rep.Excused = append(u.rep.Excused, *a)
	}
	if u.all.open == nil {
		u.countedOver = false
		clear(u.uncounted)
	}
}

// refusals counts honest viewers' refused starts, and returns those that
// came while their user held fewer streams than the limit and no fault
// could explain them: an instance killed or paused, or a store fault,
// until a renewal interval after it ends. A stream the viewer left
// without a word, or that broke (its instance went away), holds its slot
// for a lease and a renewal interval after it ended, or after the media it
// was served ran out (and the slack); one it closed, for a renewal
// interval. An honest stream cut while it played (409 or 429) is wrongful
// too, unless it was closed or kicked first or a fault explains it.
func (r Rules) refusals(attempts []Attempt, events []Event, lim limits) (refused, inFaults int, wrongful, cuts []Attempt) {
	var faults []window
	for _, e := range events {
		switch e.Kind {
		case KillCaddy, PauseCaddy, PauseRedis, Failover, Partition, Latency, DropConns:
			faults = append(faults, window{from: e.Start, to: e.End.Add(r.renewal() + r.Slack)})
		}
	}
	inFault := func(t time.Time) bool {
		return slices.ContainsFunc(faults, func(w window) bool { return !t.Before(w.from) && !t.After(w.to) })
	}
	closeSent := map[[2]string]time.Time{} // zone and id -> its first close
	for _, e := range events {
		if k := [2]string{e.Zone, e.ID}; e.Kind == Close && (closeSent[k].IsZero() || e.Start.Before(closeSent[k])) {
			closeSent[k] = e.Start
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
		if !a.Honest {
			continue
		}
		if a.Cut != 0 {
			closed := closeSent[[2]string{a.Zone, a.ID}]
			if (closed.IsZero() || closed.After(a.CutAt)) && !inFault(a.CutAt) {
				cuts = append(cuts, a)
			}
		}
		if a.Status != statusAtLimit && a.Status != statusStoreDown {
			continue
		}
		refused++
		if inFault(a.At) {
			inFaults++
			continue
		}
		held := map[string]bool{} // the streams holding a slot, by id (a stream continued is one)
		for _, b := range admitted[[2]string{a.Zone, a.User}] {
			if b.At.After(a.At) {
				continue
			}
			until := b.Ended.Add(r.renewal()) // its release, sent after the response
			if !b.Clean {
				until = laterOf(b.Ended, b.MediaEnd).Add(r.Lease + r.renewal() + r.Slack)
			}
			if b.Ended.IsZero() || !a.At.After(until) {
				held[cmp.Or(b.ID, b.Stream)] = true
			}
		}
		if len(held) < lim.least(a.Zone, a.User, a.At.Add(-r.Lease-r.Slack), a.At) {
			wrongful = append(wrongful, a)
		}
	}
	return refused, inFaults, wrongful, cuts
}

// The refusals a start may get: at the limit, and with the store down
// under on_store_error deny.
const (
	statusAtLimit   = 429
	statusStoreDown = 503
)

// oneNamePerStream names every stream by its first start's name: starts
// that the limiter gave one id (a client opening its title again) are one
// stream, and so are their requests at the origin. Shared screens, which
// play another's stream, keep their own names.
func oneNamePerStream(served []Served, attempts []Attempt) ([]Served, []Attempt) {
	byStart := slices.Clone(attempts)
	slices.SortStableFunc(byStart, func(a, b Attempt) int { return a.At.Compare(b.At) })
	first := map[[2]string]string{} // zone and id -> the first name
	alias := map[string]string{}
	for _, a := range byStart {
		if a.ID == "" || a.Shares != "" {
			continue
		}
		k := [2]string{a.Zone, a.ID}
		if name, ok := first[k]; !ok {
			first[k] = a.Stream
		} else if name != a.Stream {
			alias[a.Stream] = name
		}
	}
	if len(alias) == 0 {
		return served, attempts
	}
	rename := func(s string) string { return cmp.Or(alias[s], s) }
	served = slices.Clone(served)
	for i := range served {
		served[i].Stream = rename(served[i].Stream)
	}
	attempts = slices.Clone(attempts)
	for i := range attempts {
		attempts[i].Stream, attempts[i].Shares = rename(attempts[i].Stream), rename(attempts[i].Shares)
	}
	return served, attempts
}

// spanner follows how many distinct streams one user has being served,
// and the span in which they exceed a bound.
type spanner struct {
	zone, user string
	active     map[string]int // stream -> its requests being served
	open       *Span
}

func (sp *spanner) step(stream string, start bool) {
	if sp.active == nil {
		sp.active = map[string]int{}
	}
	if start {
		sp.active[stream]++
	} else if sp.active[stream]--; sp.active[stream] <= 0 {
		delete(sp.active, stream)
	}
}

// judge opens a span when the streams exceed bound at t, widens the open
// one's worst, and returns it when they no longer do.
func (sp *spanner) judge(t time.Time, bound int) *Span {
	switch n := len(sp.active); {
	case n > bound && sp.open == nil:
		sp.open = &Span{Zone: sp.zone, User: sp.user, From: t, Bound: bound, Streams: sortedKeys(sp.active)}
	case n > bound && n > len(sp.open.Streams):
		sp.open.Streams = sortedKeys(sp.active)
	case n <= bound:
		return sp.closeAt(t)
	}
	return nil
}

// closeAt ends the open span at t, and returns it.
func (sp *spanner) closeAt(t time.Time) *Span {
	s := sp.open
	if s != nil {
		s.To = t
		sp.open = nil
	}
	return s
}

// The reasons a shared screen's fetch is not counted.
const (
	notToldApart    = "shared screen not yet told apart"
	acrossInstances = "shared screens on different instances"
)

// unseenShares finds the fetches of shared screens that the limiter need
// not have counted, by their index in served, and why: those served while
// another player of the same stream fetched through another instance only
// (each instance counts the players it serves), and the first ShareFetches
// a screen was served beside another player of its stream through one
// instance (since it last changed instance). A shared screen alone on its
// stream is its stream's one player, and counted.
func (r Rules) unseenShares(served []Served, attempts []Attempt) map[int]string {
	owner := map[string]string{} // shared screen -> the stream it shares
	for _, a := range attempts {
		if a.Shares != "" {
			owner[a.Stream] = a.Shares
		}
	}
	if len(owner) == 0 {
		return nil
	}
	family := func(stream string) string {
		if o, ok := owner[stream]; ok {
			return o
		}
		return stream
	}
	byFamily := map[string][]int{} // the stream and its shared screens' fetches, by index
	for i, s := range served {
		byFamily[family(s.Stream)] = append(byFamily[family(s.Stream)], i)
	}
	out := map[int]string{}
	for _, idx := range byFamily {
		slices.SortFunc(idx, func(a, b int) int { return served[a].Start.Compare(served[b].Start) })
		via := map[string]string{} // screen -> the instance it fetched through last
		beside := map[string]int{} // screen -> its fetches beside another there since
		for k, i := range idx {
			s := served[i]
			if _, shared := owner[s.Stream]; !shared {
				continue
			}
			if via[s.Stream] != s.Via {
				via[s.Stream], beside[s.Stream] = s.Via, 0
			}
			here, elsewhere := false, false
			for _, j := range neighbours(served, idx, k) {
				o := served[j]
				if o.Stream == s.Stream {
					continue
				}
				if o.Via == s.Via {
					here = true
				} else {
					elsewhere = true
				}
			}
			switch {
			case here:
				if beside[s.Stream] < r.ShareFetches {
					out[i] = notToldApart
				}
				beside[s.Stream]++
			case elsewhere:
				out[i] = acrossInstances
			}
		}
	}
	return out
}

// neighbours are the indices (into served, from idx, sorted by start) of
// the fetches that started within together of idx[k]'s.
func neighbours(served []Served, idx []int, k int) []int {
	t := served[idx[k]].Start
	lo, hi := k, k
	for lo > 0 && t.Sub(served[idx[lo-1]].Start) <= together {
		lo--
	}
	for hi+1 < len(idx) && served[idx[hi+1]].Start.Sub(t) <= together {
		hi++
	}
	return idx[lo : hi+1]
}

func sortedValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

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
