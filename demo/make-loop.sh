#!/usr/bin/env bash
# Writes demo/media/hls/loop.m3u8: the six HLS segments looped for half an
# hour, one discontinuity per lap (each lap's timestamps start again). The
# demo page plays it, so its players keep fetching segments, and keep their
# leases, for as long as someone watches. No ffmpeg needed.
set -euo pipefail
hls="$(cd "$(dirname "$0")" && pwd)/media/hls"
laps=150
{
	printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n'
	for lap in $(seq "$laps"); do
		if [ "$lap" -gt 1 ]; then echo '#EXT-X-DISCONTINUITY'; fi
		# The segment lines of index.m3u8: each #EXTINF and the URL after it.
		sed -n '/^#EXTINF/{p;n;p}' "$hls/index.m3u8"
	done
	echo '#EXT-X-ENDLIST'
} >"$hls/loop.m3u8"
