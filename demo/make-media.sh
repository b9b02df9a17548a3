#!/usr/bin/env bash
# Makes the tiny demo media committed under demo/media: a 12-second test
# pattern with a tone, as HLS (six 2-second segments), as DASH (the same,
# fragmented MP4) and as one progressive MP4. Run it from anywhere; it
# needs ffmpeg. The output is committed, so the demo itself needs no ffmpeg.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
media="$here/media"
rm -rf "$media"
mkdir -p "$media/hls" "$media/dash" "$media/mp4"

src=(-f lavfi -i "testsrc2=size=320x180:rate=24:duration=12"
	-f lavfi -i "sine=frequency=440:sample_rate=44100:duration=12")
enc=(-c:v libx264 -profile:v baseline -preset veryfast -b:v 120k -g 48 -keyint_min 48 -sc_threshold 0
	-c:a aac -b:a 32k -ac 1)
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }

ff "${src[@]}" "${enc[@]}" -f hls -hls_time 2 -hls_playlist_type vod \
	-hls_segment_filename "$media/hls/seg%02d.ts" "$media/hls/index.m3u8"

# Segment URLs in the manifest are relative, as a path token needs.
ff "${src[@]}" "${enc[@]}" -f dash -seg_duration 2 -use_template 1 -use_timeline 0 \
	-init_seg_name 'init-$RepresentationID$.m4s' -media_seg_name 'chunk-$RepresentationID$-$Number%03d$.m4s' \
	"$media/dash/manifest.mpd"

ff "${src[@]}" "${enc[@]}" -movflags +faststart "$media/mp4/video.mp4"

"$here/make-loop.sh"

du -sh "$media"/*
