package manifest

import (
	"bytes"
	"strconv"
	"time"
)

// HLS (RFC 8216 and its draft successor): a playlist is lines; a line is a
// tag (#EXT...), a comment (#...), blank, or a URI. URIs also sit in the
// quoted-string attributes of some tags. Lines end in LF or CRLF.

// hlsURIAttrs lists, for each tag that carries URIs in its attribute list,
// which attributes are URIs and what they point at. A tag missing here
// whose name begins EXT-X- still has its URI attribute reported, as
// RoleOther: a tag this package has not heard of must not leak an
// unrewritten URI.
var hlsURIAttrs = map[string][]struct {
	attr string
	role Role
}{
	"EXT-X-MAP":                  {{"URI", RoleInit}},
	"EXT-X-KEY":                  {{"URI", RoleKey}},
	"EXT-X-SESSION-KEY":          {{"URI", RoleKey}},
	"EXT-X-MEDIA":                {{"URI", RoleMedia}},
	"EXT-X-I-FRAME-STREAM-INF":   {{"URI", RoleIFramePlaylist}},
	"EXT-X-PART":                 {{"URI", RolePart}},
	"EXT-X-PRELOAD-HINT":         {{"URI", RolePreloadHint}},
	"EXT-X-RENDITION-REPORT":     {{"URI", RoleRenditionReport}},
	"EXT-X-SESSION-DATA":         {{"URI", RoleSessionData}},
	"EXT-X-CONTENT-STEERING":     {{"SERVER-URI", RoleSteering}},
	"EXT-X-DATERANGE":            {{"X-ASSET-URI", RoleAsset}, {"X-ASSET-LIST", RoleAsset}},
	"EXT-X-IMAGE-STREAM-INF":     {{"URI", RolePlaylist}}, // image (thumbnail) playlists
	"EXT-X-STREAM-INF":           nil,                     // its URI is the next line
	"EXT-X-DEFINE":               nil,                     // NAME/VALUE, IMPORT, QUERYPARAM: no URI
	"EXT-X-START":                nil,
	"EXT-X-SERVER-CONTROL":       nil,
	"EXT-X-PART-INF":             nil,
	"EXT-X-SKIP":                 nil,
	"EXT-X-BYTERANGE":            nil,
	"EXT-X-PROGRAM-DATE-TIME":    nil,
	"EXT-X-TARGETDURATION":       nil,
	"EXT-X-MEDIA-SEQUENCE":       nil,
	"EXT-X-VERSION":              nil,
	"EXT-X-PLAYLIST-TYPE":        nil,
	"EXT-X-DISCONTINUITY":        nil,
	"EXT-X-ENDLIST":              nil,
	"EXT-X-INDEPENDENT-SEGMENTS": nil,
}

type hlsAttr struct {
	name       []byte
	start, end int // the value's bytes, inside the quotes if quoted
	quoted     bool
}

// scanHLS finds every URI of a playlist and hands it to w; it fills sum
// when sum is not nil.
func scanHLS(b []byte, w *writer, sum *Summary) error {
	p := 0
	if bytes.HasPrefix(b, bom) {
		p = len(bom)
	}
	if !bytes.HasPrefix(b[p:], []byte("#EXTM3U")) {
		return ErrNotManifest
	}
	var (
		segDur  time.Duration // from the last #EXTINF, for the next URI line
		variant bool          // the last tag was EXT-X-STREAM-INF: the next URI line is a playlist
		attrs   []hlsAttr
	)
	for p < len(b) {
		eol, next := len(b), len(b)
		if i := bytes.IndexByte(b[p:], '\n'); i >= 0 {
			eol, next = p+i, p+i+1
		}
		s, e := p, eol
		if e > s && b[e-1] == '\r' {
			e--
		}
		for s < e && (b[s] == ' ' || b[s] == '\t') {
			s++
		}
		for e > s && (b[e-1] == ' ' || b[e-1] == '\t') {
			e--
		}
		p = next
		switch {
		case s == e:
			continue
		case b[s] != '#':
			r := Ref{Role: RoleSegment, URI: w.uri(s, e), Duration: segDur, Tag: "EXTINF"}
			if variant {
				r = Ref{Role: RolePlaylist, URI: r.URI, Tag: "EXT-X-STREAM-INF"}
			} else if sum != nil {
				sum.Segments++
				sum.Total += segDur
			}
			segDur, variant = 0, false
			if err := w.ref(s, e, r, spanLine); err != nil {
				return err
			}
			continue
		case !bytes.HasPrefix(b[s:e], []byte("#EXT")):
			continue // a comment
		}
		name, value, hasValue := bytes.Cut(b[s+1:e], []byte(":"))
		vs := s + 1 + len(name) + 1 // where value starts in b
		switch string(name) {
		case "EXTINF":
			d, _, _ := bytes.Cut(value, []byte(","))
			segDur = parseSeconds(d)
			continue
		case "EXT-X-STREAM-INF":
			variant = true
			if sum != nil {
				sum.Master = true
			}
			continue
		case "EXT-X-TARGETDURATION":
			if sum != nil {
				f, _ := strconv.ParseFloat(string(bytes.TrimSpace(value)), 64)
				sum.TargetDuration = seconds(f)
			}
			continue
		case "EXT-X-ENDLIST":
			if sum != nil {
				sum.Ended = true
			}
			continue
		case "EXT-X-PLAYLIST-TYPE":
			if sum != nil && string(bytes.TrimSpace(value)) == "VOD" {
				sum.Ended = true
			}
			continue
		}
		uriAttrs, known := hlsURIAttrs[string(name)]
		if !hasValue || (known && uriAttrs == nil) || (!known && !bytes.HasPrefix(name, []byte("EXT-X-"))) {
			continue
		}
		attrs = parseHLSAttrs(b, vs, e, attrs[:0])
		var dur time.Duration
		if string(name) == "EXT-X-PART" {
			for _, a := range attrs {
				if string(a.name) == "DURATION" {
					f, _ := strconv.ParseFloat(string(b[a.start:a.end]), 64)
					dur = seconds(f)
				}
			}
		}
		if string(name) == "EXT-X-I-FRAME-STREAM-INF" && sum != nil {
			sum.Master = true
		}
		for _, a := range attrs {
			if !a.quoted || a.start == a.end {
				continue // URIs are quoted-strings; an empty one points nowhere
			}
			role, ok := RoleOther, !known && string(a.name) == "URI"
			for _, u := range uriAttrs {
				if string(a.name) == u.attr {
					role, ok = u.role, true
				}
			}
			if !ok {
				continue
			}
			r := Ref{Role: role, URI: w.uri(a.start, a.end), Duration: dur, Tag: string(name)}
			if role == RoleMedia {
				r.Track = hlsTrack(b, attrs)
				if sum != nil && r.Track == "video" {
					sum.Video = true
				}
			}
			if err := w.ref(a.start, a.end, r, spanQuoted); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseHLSAttrs reads an attribute list, NAME=value,NAME="quoted
// string",..., from b[p:e] into dst. It is lenient: it skips what it cannot
// read (and stops at an unterminated quote) rather than fail, as players
// do.
func parseHLSAttrs(b []byte, p, e int, dst []hlsAttr) []hlsAttr {
	for p < e {
		for p < e && (b[p] == ' ' || b[p] == '\t' || b[p] == ',') {
			p++
		}
		ns := p
		for p < e && b[p] != '=' && b[p] != ',' {
			p++
		}
		if p >= e {
			break
		}
		if b[p] == ',' {
			continue // a name without a value
		}
		name := bytes.TrimSpace(b[ns:p])
		p++
		for p < e && (b[p] == ' ' || b[p] == '\t') {
			p++
		}
		if p < e && b[p] == '"' {
			q := bytes.IndexByte(b[p+1:e], '"')
			if q < 0 {
				break
			}
			dst = append(dst, hlsAttr{name: name, start: p + 1, end: p + 1 + q, quoted: true})
			p += q + 2
			continue
		}
		vs := p
		for p < e && b[p] != ',' {
			p++
		}
		dst = append(dst, hlsAttr{name: name, start: vs, end: vs + len(bytes.TrimRight(b[vs:p], " \t"))})
	}
	return dst
}

// hlsTrack is the kind of media an EXT-X-MEDIA tag's TYPE names.
func hlsTrack(b []byte, attrs []hlsAttr) string {
	for _, a := range attrs {
		if string(a.name) != "TYPE" {
			continue
		}
		switch string(b[a.start:a.end]) {
		case "VIDEO":
			return "video"
		case "AUDIO":
			return "audio"
		case "SUBTITLES", "CLOSED-CAPTIONS":
			return "text"
		}
	}
	return ""
}
