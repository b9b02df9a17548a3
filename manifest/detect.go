package manifest

import (
	"bytes"
	"strings"
)

// Detect tells a manifest by its Content-Type and, when the type says
// nothing definite (missing, octet-stream, plain text, generic XML, as many
// origins and object stores serve them), by the extension of its URL path.
// A definite other type wins over the extension, so that an HTML error page
// served for a .m3u8 path is not read as a playlist.
func Detect(contentType, path string) Kind {
	mt := contentType
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	switch strings.ToLower(strings.TrimSpace(mt)) {
	case "application/vnd.apple.mpegurl", "application/x-mpegurl",
		"audio/mpegurl", "audio/x-mpegurl":
		return HLS
	case "application/dash+xml", "video/vnd.mpeg.dash.mpd":
		return DASH
	case "", "application/octet-stream", "binary/octet-stream",
		"text/plain", "application/xml", "text/xml":
	default:
		return None
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.ToLower(path)
	switch {
	case strings.HasSuffix(path, ".m3u8"):
		return HLS
	case strings.HasSuffix(path, ".mpd"):
		return DASH
	}
	return None
}

var bom = []byte("\xef\xbb\xbf")

// Sniff tells a manifest by its first bytes, for origins whose type and
// path both say nothing: an HLS playlist must begin with #EXTM3U; an MPD
// has an MPD element near its start.
func Sniff(body []byte) Kind {
	body = bytes.TrimPrefix(body, bom)
	if bytes.HasPrefix(body, []byte("#EXTM3U")) {
		return HLS
	}
	// The root may follow an XML declaration and comments, and may carry
	// a namespace prefix (<mpd:MPD>).
	head := body[:min(len(body), 2048)]
	if bytes.Contains(head, []byte("<MPD")) || bytes.Contains(head, []byte(":MPD")) && bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("<")) {
		return DASH
	}
	return None
}
