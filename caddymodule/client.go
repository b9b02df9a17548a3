package caddymodule

import "strings"

// clientKind describes a User-Agent coarsely, as a viewer names a screen:
// "Chrome on Android", "Safari on iOS", "VLC", "a TV". It names a family
// and a platform, never a version or a device model, so that a refusal
// that lists a viewer's screens tells them apart without fingerprinting
// anyone. "" when it cannot tell.
func clientKind(ua string) string {
	for _, p := range players {
		if strings.Contains(ua, p.token) {
			return p.name
		}
	}
	browser := ""
	for _, b := range browsers {
		if strings.Contains(ua, b.token) {
			browser = b.name
			break
		}
	}
	platform := ""
	for _, p := range platforms {
		if strings.Contains(ua, p.token) {
			platform = p.name
			break
		}
	}
	switch {
	case browser != "" && platform != "":
		return browser + " on " + platform
	case browser != "":
		return browser
	case platform != "":
		return "an app on " + platform
	}
	return ""
}

type uaToken struct{ token, name string }

// The tables are in order: the first that matches wins (Chrome's
// User-Agent says Safari too; Edge's says Chrome).
var (
	players = []uaToken{
		{"VLC/", "VLC"}, {"LibVLC", "VLC"}, {"mpv", "mpv"}, {"Lavf/", "ffmpeg"},
		{"streamlink", "streamlink"}, {"yt-dlp", "yt-dlp"}, {"ExoPlayer", "an Android app"},
		{"AppleCoreMedia", "an Apple device"}, {"SMART-TV", "a TV"}, {"SmartTV", "a TV"},
		{"Tizen", "a TV"}, {"Web0S", "a TV"}, {"AppleTV", "a TV"}, {"CrKey", "a Chromecast"},
	}
	browsers = []uaToken{
		{"Edg/", "Edge"}, {"OPR/", "Opera"}, {"Firefox/", "Firefox"}, {"Chrome/", "Chrome"},
		{"Chromium/", "Chrome"}, {"Safari/", "Safari"},
	}
	platforms = []uaToken{
		{"Android", "Android"}, {"iPhone", "iOS"}, {"iPad", "iPadOS"}, {"CrOS", "ChromeOS"},
		{"Mac OS X", "macOS"}, {"Macintosh", "macOS"}, {"Windows", "Windows"}, {"Linux", "Linux"},
	}
)
