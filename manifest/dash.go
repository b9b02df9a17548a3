package manifest

import (
	"bytes"
	"fmt"
	"math/bits"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DASH (ISO/IEC 23009-1): an MPD is XML. encoding/xml cannot write an MPD
// back as it came (it re-declares namespaces and normalizes what it
// reads), so a small scanner finds the byte spans of the URIs and the
// writer copies everything around them.

// dashURIAttrs lists the attributes that hold URIs, per element (local
// name). Any element's xlink:href is a URI too (remote Periods and
// AdaptationSets).
var dashURIAttrs = map[string]map[string]Role{
	"SegmentTemplate":     {"media": RoleSegment, "initialization": RoleInit, "index": RoleIndex, "bitstreamSwitching": RoleInit},
	"SegmentURL":          {"media": RoleSegment, "index": RoleIndex},
	"Initialization":      {"sourceURL": RoleInit},
	"RepresentationIndex": {"sourceURL": RoleIndex},
	"BitstreamSwitching":  {"sourceURL": RoleInit},
}

// dashURIText lists the elements whose text is a URI.
var dashURIText = map[string]Role{
	"BaseURL":         RoleBaseURL,
	"Location":        RoleLocation,
	"PatchLocation":   RoleLocation,
	"ContentSteering": RoleSteering,
}

// dashFrame is an open element.
type dashFrame struct {
	qname []byte
	name  string // local name
	// outer is the BaseURL scope this element was opened in; base is the
	// scope of its children, outer joined with its first BaseURL child.
	outer, base string
	ownBase     bool
	// timescale and duration are the segment timing in scope, from the
	// nearest SegmentTemplate or SegmentList here or above.
	timescale, duration uint64
	startNumber         uint64
	seg                 *dashSeg // for a SegmentTemplate or SegmentList
	text                int      // for a URI-text element: where its text starts; -1 once it holds anything else
	track               string   // the kind of media in scope (Ref.Track)
}

// dashSeg is an open SegmentTemplate or SegmentList: its URIs wait until
// its end, where its SegmentTimeline, if any, has been read.
type dashSeg struct {
	list  bool
	runs  []dashRun
	first int // its first ref in pending
}

// dashRun is one SegmentTimeline S as written: n segments of d timescale
// units, from t if it says; n is 0 for r="-1" (repeat until the next S
// or the Period's end).
type dashRun struct {
	t, d, n uint64
	hasT    bool
}

type dashPending struct {
	start, end int
	ref        Ref
	owner      int  // stack depth of the SegmentTemplate/SegmentList it belongs to
	media      bool // a segment URI, which takes its duration from the owner
}

type xmlAttr struct {
	name       []byte
	start, end int
}

type dashScanner struct {
	b       []byte
	w       *writer
	sum     *Summary
	stack   []dashFrame
	pending []dashPending
	open    int // SegmentTemplate/SegmentList elements open
	root    bool
	attrs   []xmlAttr
}

func scanDASH(b []byte, w *writer, sum *Summary) error {
	s := dashScanner{b: b, w: w, sum: sum}
	return s.run()
}

func (s *dashScanner) errorf(at int, format string, args ...any) error {
	return fmt.Errorf("manifest: MPD at byte %d: %s", at, fmt.Sprintf(format, args...))
}

func (s *dashScanner) run() error {
	b := s.b
	p := 0
	if bytes.HasPrefix(b, bom) {
		p = len(bom)
	}
	for p < len(b) {
		i := bytes.IndexByte(b[p:], '<')
		if i < 0 {
			break
		}
		lt := p + i
		rest := b[lt:]
		skip := func(open, close string) error {
			j := bytes.Index(rest[len(open):], []byte(close))
			if j < 0 {
				return s.errorf(lt, "unterminated %s", open)
			}
			s.notText()
			p = lt + len(open) + j + len(close)
			return nil
		}
		var err error
		switch {
		case bytes.HasPrefix(rest, []byte("<!--")):
			err = skip("<!--", "-->")
		case bytes.HasPrefix(rest, []byte("<![CDATA[")):
			err = skip("<![CDATA[", "]]>")
		case bytes.HasPrefix(rest, []byte("<?")):
			err = skip("<?", "?>")
		case bytes.HasPrefix(rest, []byte("<!")):
			n := skipDecl(rest)
			if n < 0 {
				return s.errorf(lt, "unterminated declaration")
			}
			s.notText()
			p = lt + n
		case bytes.HasPrefix(rest, []byte("</")):
			j := bytes.IndexByte(rest, '>')
			if j < 0 {
				return s.errorf(lt, "unterminated end tag")
			}
			err = s.end(lt, bytes.TrimRight(rest[2:j], " \t\r\n"))
			p = lt + j + 1
		default:
			p, err = s.start(lt)
		}
		if err != nil {
			return err
		}
	}
	if len(s.stack) > 0 {
		return s.errorf(len(b), "element %s not closed", s.stack[len(s.stack)-1].qname)
	}
	if !s.root {
		return ErrNotManifest
	}
	return nil
}

// notText marks the innermost element as holding more than text: a URI
// split by a comment or a CDATA section is not one this package rewrites.
func (s *dashScanner) notText() {
	if n := len(s.stack); n > 0 {
		s.stack[n-1].text = -1
	}
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func localName(qname []byte) string {
	if i := bytes.LastIndexByte(qname, ':'); i >= 0 {
		return string(qname[i+1:])
	}
	return string(qname)
}

// start reads the start tag at b[lt:] and returns where it ends.
func (s *dashScanner) start(lt int) (int, error) {
	b := s.b
	p := lt + 1
	for p < len(b) && !isXMLSpace(b[p]) && b[p] != '>' && b[p] != '/' {
		p++
	}
	if p == lt+1 {
		return 0, s.errorf(lt, "'<' not starting a tag")
	}
	qname := b[lt+1 : p]
	attrs := s.attrs[:0]
	selfClose := false
	for {
		for p < len(b) && isXMLSpace(b[p]) {
			p++
		}
		if p >= len(b) {
			return 0, s.errorf(lt, "unterminated tag %s", qname)
		}
		if b[p] == '>' {
			p++
			break
		}
		if b[p] == '/' {
			if p+1 < len(b) && b[p+1] == '>' {
				p += 2
				selfClose = true
				break
			}
			return 0, s.errorf(p, "stray '/' in tag %s", qname)
		}
		as := p
		for p < len(b) && !isXMLSpace(b[p]) && b[p] != '=' && b[p] != '>' && b[p] != '/' {
			p++
		}
		if p == as {
			return 0, s.errorf(p, "stray %q in tag %s", b[p], qname)
		}
		name := b[as:p]
		for p < len(b) && isXMLSpace(b[p]) {
			p++
		}
		if p >= len(b) || b[p] != '=' {
			return 0, s.errorf(as, "attribute %s without a value", name)
		}
		p++
		for p < len(b) && isXMLSpace(b[p]) {
			p++
		}
		if p >= len(b) || (b[p] != '"' && b[p] != '\'') {
			return 0, s.errorf(as, "attribute %s not quoted", name)
		}
		j := bytes.IndexByte(b[p+1:], b[p])
		if j < 0 {
			return 0, s.errorf(as, "attribute %s not closed", name)
		}
		attrs = append(attrs, xmlAttr{name: name, start: p + 1, end: p + 1 + j})
		p += j + 2
	}
	s.attrs = attrs
	name := localName(qname)
	if len(s.stack) == 0 {
		if s.root {
			return 0, s.errorf(lt, "second root element %s", qname)
		}
		if name != "MPD" {
			return 0, ErrNotManifest
		}
		s.root = true
	}
	s.push(qname, name, attrs)
	if _, ok := dashURIText[name]; ok && !selfClose {
		s.stack[len(s.stack)-1].text = p
	}
	if selfClose {
		s.pop()
	}
	return p, s.flush()
}

func (s *dashScanner) push(qname []byte, name string, attrs []xmlAttr) {
	f := dashFrame{qname: qname, name: name, text: -1, timescale: 1, startNumber: 1}
	if n := len(s.stack); n > 0 {
		parent := &s.stack[n-1]
		parent.text = -1
		f.outer, f.base = parent.base, parent.base
		f.timescale, f.duration, f.startNumber = parent.timescale, parent.duration, parent.startNumber
		f.track = parent.track
	}
	switch name {
	case "AdaptationSet", "Representation":
		if t := s.track(attrs); t != "" {
			f.track = t
			if t == "video" && s.sum != nil {
				s.sum.Video = true
			}
		}
	case "MPD":
		s.summarizeMPD(attrs)
	case "SegmentTemplate", "SegmentList":
		f.seg = &dashSeg{list: name == "SegmentList", first: len(s.pending)}
		for _, a := range attrs {
			switch string(a.name) {
			case "timescale":
				if v, err := strconv.ParseUint(string(s.b[a.start:a.end]), 10, 64); err == nil && v > 0 {
					f.timescale = v
				}
			case "duration":
				if v, err := strconv.ParseUint(string(s.b[a.start:a.end]), 10, 64); err == nil {
					f.duration = v
				}
			case "startNumber":
				if v, err := strconv.ParseUint(string(s.b[a.start:a.end]), 10, 64); err == nil {
					f.startNumber = v
				}
			}
		}
		// Representations after an AdaptationSet's template inherit its timing.
		if n := len(s.stack); n > 0 {
			parent := &s.stack[n-1]
			parent.timescale, parent.duration, parent.startNumber = f.timescale, f.duration, f.startNumber
		}
		s.open++
	case "S":
		s.addRun(attrs)
	}
	s.stack = append(s.stack, f)
	depth := len(s.stack) - 1
	uriAttrs := dashURIAttrs[name]
	for _, a := range attrs {
		role, ok := uriAttrs[string(a.name)]
		if !ok && string(a.name) == "xlink:href" {
			role, ok = RoleOther, true
		}
		v := s.b[a.start:a.end]
		if !ok || len(v) == 0 || string(v) == "urn:mpeg:dash:resolve-to-zero:2013" ||
			(name == "SegmentTemplate" && string(a.name) == "bitstreamSwitching" && (string(v) == "true" || string(v) == "false")) {
			continue
		}
		r := Ref{Role: role, URI: xmlUnescape(v), Base: f.base, Track: f.track, Tag: name + "@" + string(a.name)}
		r.Template = name == "SegmentTemplate" && strings.Contains(r.URI, "$")
		s.emit(a.start, a.end, r, role == RoleSegment, depth)
	}
}

// track is the kind of media an AdaptationSet's or Representation's
// contentType or mimeType names, or "".
func (s *dashScanner) track(attrs []xmlAttr) string {
	var t string
	for _, a := range attrs {
		v := string(s.b[a.start:a.end])
		switch string(a.name) {
		case "contentType":
			return trackOf(v)
		case "mimeType":
			t, _, _ = strings.Cut(v, "/")
			t = trackOf(t)
		}
	}
	return t
}

func trackOf(kind string) string {
	switch kind {
	case "video", "audio", "text":
		return kind
	case "application": // TTML and WebVTT in MP4 are application/mp4
		return "text"
	}
	return ""
}

// addRun records a SegmentTimeline S in the innermost open template or list.
func (s *dashScanner) addRun(attrs []xmlAttr) {
	var seg *dashSeg
	for i := len(s.stack) - 1; i >= 0 && seg == nil; i-- {
		seg = s.stack[i].seg
	}
	if seg == nil {
		return
	}
	run := dashRun{n: 1}
	for _, a := range attrs {
		v := string(s.b[a.start:a.end])
		switch string(a.name) {
		case "t":
			run.t, _ = strconv.ParseUint(v, 10, 64)
			run.hasT = true
		case "d":
			run.d, _ = strconv.ParseUint(v, 10, 64)
		case "r":
			if r, err := strconv.ParseInt(v, 10, 64); err == nil {
				if r < 0 {
					run.n = 0
				} else {
					run.n = uint64(r) + 1
				}
			}
		}
	}
	seg.runs = append(seg.runs, run)
}

// emit hands a ref to the writer, or holds it while a SegmentTemplate or
// SegmentList is open, whose timeline comes after its attributes.
func (s *dashScanner) emit(start, end int, r Ref, media bool, depth int) {
	if s.open == 0 {
		s.pending = append(s.pending, dashPending{start: start, end: end, ref: r})
		return
	}
	owner := -1
	for i := depth; i >= 0 && i < len(s.stack); i-- {
		if s.stack[i].seg != nil {
			owner = i
			break
		}
	}
	s.pending = append(s.pending, dashPending{start: start, end: end, ref: r, owner: owner, media: media && owner >= 0})
}

// flush writes the held refs once no template or list is open.
func (s *dashScanner) flush() error {
	if s.open > 0 {
		return nil
	}
	for _, p := range s.pending {
		if err := s.w.ref(p.start, p.end, p.ref, spanXML); err != nil {
			return err
		}
	}
	s.pending = s.pending[:0]
	return nil
}

func (s *dashScanner) end(lt int, qname []byte) error {
	n := len(s.stack)
	if n == 0 || !bytes.Equal(s.stack[n-1].qname, qname) {
		return s.errorf(lt, "end tag %s does not close an open element", qname)
	}
	f := &s.stack[n-1]
	if role, ok := dashURIText[f.name]; ok && f.text >= 0 {
		ts, te := f.text, lt
		for ts < te && isXMLSpace(s.b[ts]) {
			ts++
		}
		for te > ts && isXMLSpace(s.b[te-1]) {
			te--
		}
		if ts < te {
			r := Ref{Role: role, URI: xmlUnescape(s.b[ts:te]), Track: f.track, Tag: f.name}
			if role == RoleBaseURL {
				r.Base = f.outer
				if n >= 2 && !s.stack[n-2].ownBase {
					// Several BaseURLs at one level are alternatives
					// (mirrors); players start with the first.
					parent := &s.stack[n-2]
					parent.base, parent.ownBase = joinBase(parent.outer, r.URI), true
				}
			}
			s.emit(ts, te, r, false, n-1)
		}
	}
	s.pop()
	return s.flush()
}

// pop closes the innermost element; a template or list gives its segment
// URIs their duration as it closes.
func (s *dashScanner) pop() {
	n := len(s.stack)
	f := s.stack[n-1]
	s.stack = s.stack[:n-1]
	if f.seg == nil {
		return
	}
	s.open--
	depth := n - 1
	constant := time.Duration(0)
	if len(f.seg.runs) == 0 {
		constant = ticks(f.duration, f.timescale)
	} else if !f.seg.list {
		d := f.seg.runs[0].d
		for _, r := range f.seg.runs {
			if r.d != d {
				d = 0
			}
		}
		constant = ticks(d, f.timescale)
	}
	var tl *Timeline
	run, used := 0, uint64(0) // the next SegmentURL's place in the timeline
	for i := f.seg.first; i < len(s.pending); i++ {
		p := &s.pending[i]
		if !p.media || p.owner != depth {
			continue
		}
		p.media = false
		if len(f.seg.runs) == 0 || !f.seg.list {
			p.ref.Duration = constant
			if len(f.seg.runs) > 0 {
				if tl == nil {
					tl = newTimeline(f.seg.runs, f.timescale, f.startNumber)
				}
				p.ref.Timeline = tl
			}
			continue
		}
		if run < len(f.seg.runs) {
			p.ref.Duration = ticks(f.seg.runs[run].d, f.timescale)
			if used++; f.seg.runs[run].n != 0 && used >= f.seg.runs[run].n {
				run, used = run+1, 0
			}
		}
	}
}

// skipDecl returns the length of the declaration (<!DOCTYPE ...>, with an
// internal subset in brackets) at the start of b, or -1.
func skipDecl(b []byte) int {
	depth := 0
	var quote byte
	for i := 2; i < len(b); i++ {
		c := b[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '[':
			depth++
		case c == ']':
			depth--
		case c == '>' && depth <= 0:
			return i + 1
		}
	}
	return -1
}

func (s *dashScanner) summarizeMPD(attrs []xmlAttr) {
	if s.sum == nil {
		return
	}
	s.sum.Ended = true
	for _, a := range attrs {
		v := string(s.b[a.start:a.end])
		switch string(a.name) {
		case "type":
			s.sum.Ended = v != "dynamic"
		case "mediaPresentationDuration":
			s.sum.Total = isoDuration(v)
		case "maxSegmentDuration":
			s.sum.TargetDuration = isoDuration(v)
		}
	}
}

// ticks is d timescale units as a duration.
func ticks(d, timescale uint64) time.Duration {
	if d == 0 || timescale == 0 {
		return 0
	}
	// In integers, so that 120120/30000 is 4.004s exactly.
	hi, lo := bits.Mul64(d, uint64(time.Second))
	if hi >= timescale {
		return 0
	}
	q, _ := bits.Div64(hi, lo, timescale)
	if q > uint64(1e8*time.Second) { // more than three years: not a segment
		return 0
	}
	return time.Duration(q)
}

// isoDuration reads the xs:duration an MPD uses (PT1H2M3.5S, P1DT2H); it
// returns 0 for years and months, which have no fixed length, and for
// what it cannot read.
func isoDuration(v string) time.Duration {
	v, ok := strings.CutPrefix(v, "P")
	if !ok {
		return 0
	}
	var total float64
	inTime := false
	for v != "" {
		if v[0] == 'T' {
			inTime, v = true, v[1:]
			continue
		}
		i := strings.IndexAny(v, "YMWDHS")
		if i <= 0 {
			return 0
		}
		f, err := strconv.ParseFloat(v[:i], 64)
		if err != nil {
			return 0
		}
		switch unit := v[i]; {
		case unit == 'D' && !inTime:
			total += f * 86400
		case unit == 'W' && !inTime:
			total += f * 7 * 86400
		case unit == 'H' && inTime:
			total += f * 3600
		case unit == 'M' && inTime:
			total += f * 60
		case unit == 'S' && inTime:
			total += f
		default:
			return 0
		}
		v = v[i+1:]
	}
	return seconds(total)
}

// joinBase combines a BaseURL scope with the BaseURL inside it. A
// relative scope stays relative: the caller resolves the result against
// the MPD's own URL.
func joinBase(outer, inner string) string {
	if outer == "" {
		return inner
	}
	iu, err := url.Parse(inner)
	if err != nil || iu.IsAbs() || strings.HasPrefix(inner, "//") {
		return inner
	}
	if ou, err := url.Parse(outer); err == nil && ou.IsAbs() {
		return ou.ResolveReference(iu).String()
	}
	if strings.HasPrefix(inner, "/") {
		return inner
	}
	dir := outer
	if i := strings.IndexAny(dir, "?#"); i >= 0 {
		dir = dir[:i] // a relative reference never inherits a query
	}
	return dir[:strings.LastIndexByte(dir, '/')+1] + inner
}

// xmlUnescape decodes the five predefined entities and character
// references; anything else (an entity from a DTD) is left as written.
func xmlUnescape(v []byte) string {
	if bytes.IndexByte(v, '&') < 0 {
		return string(v)
	}
	var sb strings.Builder
	for len(v) > 0 {
		i := bytes.IndexByte(v, '&')
		if i < 0 {
			sb.Write(v)
			break
		}
		sb.Write(v[:i])
		v = v[i:]
		semi := bytes.IndexByte(v, ';')
		if semi < 0 {
			sb.Write(v)
			break
		}
		ent := string(v[1:semi])
		decoded := true
		switch ent {
		case "amp":
			sb.WriteByte('&')
		case "lt":
			sb.WriteByte('<')
		case "gt":
			sb.WriteByte('>')
		case "quot":
			sb.WriteByte('"')
		case "apos":
			sb.WriteByte('\'')
		default:
			decoded = false
			if num, ok := strings.CutPrefix(ent, "#"); ok {
				base := 10
				if hex, ok := strings.CutPrefix(num, "x"); ok {
					num, base = hex, 16
				}
				if c, err := strconv.ParseUint(num, base, 32); err == nil && c != 0 && utf8.ValidRune(rune(c)) {
					sb.WriteRune(rune(c))
					decoded = true
				}
			}
		}
		if !decoded {
			sb.Write(v[:semi+1])
		}
		v = v[semi+1:]
	}
	return sb.String()
}

// appendXMLEscaped writes s escaped for an attribute value in either
// quotes or element text. Whitespace is written as character references
// so that reading it back (which trims text and normalizes attribute
// whitespace) gives s again.
func appendXMLEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '&':
			dst = append(dst, "&amp;"...)
		case '<':
			dst = append(dst, "&lt;"...)
		case '>':
			dst = append(dst, "&gt;"...)
		case '"':
			dst = append(dst, "&quot;"...)
		case '\'':
			dst = append(dst, "&apos;"...)
		case ' ', '\t', '\n', '\r':
			dst = append(dst, "&#x"...)
			dst = strconv.AppendUint(dst, uint64(c), 16)
			dst = append(dst, ';')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
