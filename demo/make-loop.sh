#!/usr/bin/env bash
# Writes demo/media/hls/loop.m3u8: the six HLS segments looped for half an
# hour, one discontinuity per lap (each lap's timestamps start again), so
# that the demo page plays for as long as someone watches; and short.m3u8,
# four laps (48 s, longer than the demo's 30 s lease), which the browser
# test plays whole. No ffmpeg needed.
set -euo pipefail
hls="$(cd "$(dirname "$0")" && pwd)/media/hls"
loop() {
	local laps=$1
	printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n'
	for lap in $(seq "$laps"); do
		if [ "$lap" -gt 1 ]; then echo '#EXT-X-DISCONTINUITY'; fi
		# The segment lines of index.m3u8: each #EXTINF and the URL after it.
		sed -n '/^#EXTINF/{p;n;p}' "$hls/index.m3u8"
	done
	echo '#EXT-X-ENDLIST'
}
loop 150 >"$hls/loop.m3u8"
loop 4 >"$hls/short.m3u8"
