// Package manifest reads and rewrites the HLS playlists and DASH MPDs that
// the limiter proxies, so that every URI in them can be made to carry a
// stream's token. It changes only the bytes of the URIs it is told to change
// and passes every other byte through untouched, and it tells the caller what
// each URI is (a variant, a segment, a key...) and how much media it holds.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Kind is the manifest format of a response.
type Kind int

const (
	None Kind = iota // not a manifest: pass it on unread
	HLS              // an M3U8 playlist, master or media
	DASH             // an MPD
)

func (k Kind) String() string {
	switch k {
	case HLS:
		return "HLS"
	case DASH:
		return "DASH"
	}
	return "none"
}

// Role says what a URI in a manifest points at.
type Role int

const (
	RoleOther           Role = iota // a URI attribute of a tag or element not listed below
	RolePlaylist                    // HLS: a variant playlist (the line after EXT-X-STREAM-INF)
	RoleMedia                       // HLS: a rendition playlist (EXT-X-MEDIA)
	RoleIFramePlaylist              // HLS: EXT-X-I-FRAME-STREAM-INF
	RoleSegment                     // a media segment: an HLS URI line, DASH SegmentTemplate@media, SegmentURL@media
	RoleInit                        // an initialization section: EXT-X-MAP, DASH @initialization, Initialization@sourceURL
	RoleIndex                       // DASH: a segment index (@index, RepresentationIndex@sourceURL)
	RoleKey                         // HLS: EXT-X-KEY, EXT-X-SESSION-KEY
	RolePart                        // HLS: an LL-HLS partial segment (EXT-X-PART)
	RolePreloadHint                 // HLS: EXT-X-PRELOAD-HINT
	RoleRenditionReport             // HLS: EXT-X-RENDITION-REPORT
	RoleSessionData                 // HLS: EXT-X-SESSION-DATA
	RoleSteering                    // content steering: EXT-X-CONTENT-STEERING SERVER-URI, DASH ContentSteering
	RoleAsset                       // HLS interstitials: EXT-X-DATERANGE X-ASSET-URI, X-ASSET-LIST
	RoleBaseURL                     // DASH: BaseURL at any level
	RoleLocation                    // DASH: Location and PatchLocation, where a live MPD is refreshed from
)

var roleNames = [...]string{"other", "playlist", "media", "iframe-playlist", "segment", "init", "index",
	"key", "part", "preload-hint", "rendition-report", "session-data", "steering", "asset", "base-url", "location"}

func (r Role) String() string {
	if r >= 0 && int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Ref is one URI of a manifest, as Rewrite hands it to its callback.
type Ref struct {
	Role Role
	// URI is the reference as the manifest means it: without the quotes of
	// an HLS attribute, XML-unescaped in an MPD. It may be relative, and in
	// HLS it may hold EXT-X-DEFINE variables ({$name}), left unexpanded.
	URI string
	// Base is, in an MPD, the BaseURL in scope for URI, already combined
	// from the enclosing levels (MPD, Period, AdaptationSet,
	// Representation); for a BaseURL it is the scope outside it. Empty
	// when no BaseURL is in scope, and always empty in HLS (and for
	// Location, which is the MPD's own address). Resolve URI against the
	// manifest's URL joined with Base: see Ref.Resolve. A SegmentTemplate
	// at AdaptationSet level is reported once, with the AdaptationSet's
	// scope; a Representation's own BaseURL is reported (and can be
	// rewritten) as a ref of its own.
	Base string
	// Duration is the media a segment or part holds, when the manifest
	// says (#EXTINF, EXT-X-PART DURATION, DASH @duration/@timescale or a
	// SegmentTimeline whose segments are all alike); zero otherwise.
	Duration time.Duration
	// Timeline is set for the media URI of a DASH SegmentTemplate with a
	// SegmentTimeline: it gives each segment's duration by $Number$ or
	// $Time$, also when they differ and Duration is zero.
	Timeline *Timeline
	// Template is set for a DASH SegmentTemplate URI with $identifiers$
	// ($Number$, $Time$, $RepresentationID$, $Bandwidth$): URI stands for
	// many segments, each of Duration when that is constant.
	Template bool
	// Track is the kind of media the URI belongs to, where the manifest
	// says: "video", "audio" or "text" (HLS EXT-X-MEDIA TYPE; DASH
	// contentType or mimeType of the AdaptationSet or Representation).
	// Empty when unsaid, as for an HLS variant, which may hold any.
	Track string
	// Tag names where the URI was found (EXT-X-MAP, SegmentTemplate@media):
	// for logs and errors.
	Tag string
	// Start is the byte offset in the manifest at which the URI's text
	// begins (after an HLS attribute's opening quote). In HLS the URI is
	// the manifest's bytes from there on; in an MPD they may be escaped.
	Start int
}

// ErrNotManifest is returned when a body is not of the kind it was said to
// be (an HTML error page behind a .m3u8 path): pass it on unread.
var ErrNotManifest = errors.New("manifest: body is not a manifest of that kind")

// ErrReplacement is returned when the callback's replacement cannot be
// written where the URI stood without changing the manifest's structure (a
// line break in an HLS URI, a double quote in an HLS attribute).
var ErrReplacement = errors.New("manifest: replacement would change the manifest's structure")

// Rewrite calls fn for every URI of the manifest, in document order, and
// returns the manifest with each URI for which fn returns true replaced by
// the string it returns. Every other byte is passed through as it came:
// tags and elements unknown here, comments, line endings, a byte-order
// mark. In an MPD the replacement is XML-escaped as it is written; in HLS
// it must not contain a line break (nor a double quote, in an attribute).
//
// Some URIs are not handed to fn and so stay as they are: an HLS URI
// attribute that is not a quoted string (the spec requires one), MPD
// element text split by a comment or held in CDATA, and URLs that are not
// media (UTCTiming, ProgramInformation, Event data). A player fetches
// those without the token; what that fetch gets is the caller's policy.
//
// When fn changes nothing, Rewrite returns body itself. On error the
// manifest could not be read (or a replacement could not be written) and
// the caller should serve it untouched or refuse it, as its policy says.
func Rewrite(kind Kind, body []byte, fn func(Ref) (string, bool)) ([]byte, error) {
	return RewriteEdits(kind, body, func(r Ref) (Edit, bool) {
		s, ok := fn(r)
		return Edit{Insert: s, From: len(r.URI)}, ok
	})
}

// An Edit says what a URI becomes: Insert, then the URI as written from
// its byte From on. {Insert: s, From: len(URI)} replaces it with s; a
// caller that puts the same prefix before the tail of many URIs (a token
// before a file name) says so without building a string for each.
type Edit struct {
	Insert string
	From   int
}

// RewriteEdits is Rewrite, with each URI's replacement given as an Edit.
func RewriteEdits(kind Kind, body []byte, fn func(Ref) (Edit, bool)) ([]byte, error) {
	return AppendEdits(nil, kind, body, fn)
}

// AppendEdits is RewriteEdits writing the rewritten manifest into dst's
// array (dst[:0]) while it has room, so that a caller can reuse one
// buffer for many manifests. When fn changes nothing, it returns body.
func AppendEdits(dst []byte, kind Kind, body []byte, fn func(Ref) (Edit, bool)) ([]byte, error) {
	w := writer{body: body, fn: fn, out: dst[:0]}
	var err error
	switch kind {
	case HLS:
		err = scanHLS(body, &w, nil)
	case DASH:
		err = scanDASH(body, &w, nil)
	default:
		return nil, fmt.Errorf("manifest: cannot rewrite kind %v", kind)
	}
	if err != nil {
		return nil, err
	}
	if !w.edited {
		return body, nil
	}
	return append(w.out, body[w.last:]...), nil
}

// Refs lists the URIs of a manifest in document order, as Rewrite would
// hand them to its callback.
func Refs(kind Kind, body []byte) ([]Ref, error) {
	var refs []Ref
	_, err := Rewrite(kind, body, func(r Ref) (string, bool) {
		refs = append(refs, r)
		return "", false
	})
	return refs, err
}

// span says how a replacement is written where a URI stood.
type span int

const (
	spanLine   span = iota // an HLS URI line
	spanQuoted             // an HLS quoted-string attribute value
	spanXML                // an MPD attribute value or element text
)

// writer builds the output from the spans the scanners find, copying the
// bytes between them; it allocates nothing until fn changes something.
type writer struct {
	body []byte
	fn   func(Ref) (Edit, bool)
	out  []byte
	// edited is set once out holds a change: until then out is empty.
	edited bool
	last   int // body[:last] is already in out (or unchanged)
	// text is body as a string, made at the first URI: the URIs handed
	// to fn are its substrings, not one allocation each.
	text string
	// checked is the last Insert found fit for an HLS span: URIs that
	// share one are checked once.
	checked string
}

func (w *writer) ref(start, end int, r Ref, how span) error {
	if w.fn == nil {
		return nil
	}
	r.Start = start
	e, ok := w.fn(r)
	if !ok || start < w.last || end > len(w.body) {
		return nil
	}
	if e.From < 0 || e.From > len(r.URI) {
		return fmt.Errorf("%w: %s: edit from byte %d of %q", ErrReplacement, r.Tag, e.From, r.URI)
	}
	tail := r.URI[e.From:]
	switch how {
	case spanLine:
		first := byte('#') // an empty line is no URI either
		if e.Insert != "" {
			first = e.Insert[0]
		} else if tail != "" {
			first = tail[0]
		}
		if first == '#' || (e.Insert != w.checked && hasAny(e.Insert, '\r', '\n', '\n')) {
			return fmt.Errorf("%w: %s %q", ErrReplacement, r.Tag, e.Insert+tail)
		}
		w.checked = e.Insert
	case spanQuoted:
		if e.Insert != w.checked && hasAny(e.Insert, '"', '\r', '\n') {
			return fmt.Errorf("%w: %s %q", ErrReplacement, r.Tag, e.Insert+tail)
		}
		w.checked = e.Insert
	}
	if !w.edited {
		w.edited = true
		// Room for a token on every URI of a playlist of short lines
		// (where a token more than doubles a line) without regrowing, up
		// to a few MiB more than the manifest.
		if want := len(w.body) + min(2*len(w.body), 4<<20) + 64; cap(w.out) < want {
			w.out = make([]byte, 0, want)
		}
	}
	w.out = append(w.out, w.body[w.last:start]...)
	if how == spanXML {
		w.out = appendXMLEscaped(appendXMLEscaped(w.out, e.Insert), tail)
	} else {
		// In HLS the URI is its bytes as written.
		w.out = append(append(w.out, e.Insert...), w.body[start+e.From:end]...)
	}
	w.last = end
	return nil
}

// uri is body[start:end] as a string for a Ref: a substring of one copy
// of the body while the URIs go to fn, and "" when there is no fn.
func (w *writer) uri(start, end int) string {
	if w.fn == nil {
		return ""
	}
	if w.text == "" {
		w.text = string(w.body)
	}
	return w.text[start:end]
}

// hasAny reports whether s holds any of the bytes a, b, c (cheaper than
// strings.ContainsAny, which is called once a URI).
func hasAny(s string, a, b, c byte) bool {
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch == a || ch == b || ch == c {
			return true
		}
	}
	return false
}

// parseSeconds reads a duration in decimal seconds ("2", "6.006",
// "4.000000"), or returns 0 when it is not a sensible media duration. The
// plain decimal form, which packagers write, is read without a float.
func parseSeconds(b []byte) time.Duration {
	b = bytes.TrimSpace(b)
	var whole, frac, scale int64 = 0, 0, int64(time.Second)
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && whole < 1e8; i++ {
		whole = whole*10 + int64(b[i]-'0')
	}
	if i > 0 && i < len(b) && b[i] == '.' {
		i++
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if scale > 1 {
				scale /= 10
				frac += int64(b[i]-'0') * scale
			}
		}
	}
	if i == 0 || i < len(b) || whole >= 1e8 {
		f, _ := strconv.ParseFloat(string(b), 64) // exponents, signs, garbage
		return seconds(f)
	}
	return time.Duration(whole)*time.Second + time.Duration(frac)
}

// seconds turns a duration in (possibly fractional) seconds into a
// time.Duration, or 0 when it is not a sensible media duration.
func seconds(s float64) time.Duration {
	if !(s > 0) || s > 1e8 { // NaN, negative, or more than three years
		return 0
	}
	return time.Duration(math.Round(s * float64(time.Second)))
}

// Summary is what a manifest says about its media as a whole, for leases
// that follow playback.
type Summary struct {
	// Master is set for an HLS master playlist (it lists variants).
	Master bool
	// TargetDuration bounds every segment's duration: HLS
	// EXT-X-TARGETDURATION, DASH MPD@maxSegmentDuration. Zero if unsaid.
	TargetDuration time.Duration
	// Segments counts the media segments of an HLS media playlist.
	Segments int
	// Total is the media the manifest holds: in HLS the sum of its #EXTINF
	// durations, in DASH MPD@mediaPresentationDuration. Zero if unsaid.
	Total time.Duration
	// Ended is set when no more media will be added: HLS EXT-X-ENDLIST or
	// PLAYLIST-TYPE:VOD, a DASH MPD whose type is not dynamic.
	Ended bool
	// Video is set when some track is said to be video (see Ref.Track).
	Video bool
}

// Summarize reads a manifest's Summary.
func Summarize(kind Kind, body []byte) (Summary, error) {
	var sum Summary
	w := writer{body: body}
	switch kind {
	case HLS:
		return sum, scanHLS(body, &w, &sum)
	case DASH:
		return sum, scanDASH(body, &w, &sum)
	}
	return sum, fmt.Errorf("manifest: cannot summarize kind %v", kind)
}
