#!/usr/bin/env bash
# Makes the tiny demo media committed under demo/media: a 12-second test
# pattern with a tone, as HLS (six 2-second segments). Run it from anywhere;
# it needs ffmpeg. The output is committed so the demo needs no ffmpeg.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/media/hls"
rm -rf "$out"
mkdir -p "$out"
ffmpeg -hide_banner -loglevel error -y \
	-f lavfi -i "testsrc2=size=320x180:rate=24:duration=12" \
	-f lavfi -i "sine=frequency=440:sample_rate=44100:duration=12" \
	-c:v libx264 -profile:v baseline -preset veryfast -b:v 120k -g 48 -keyint_min 48 -sc_threshold 0 \
	-c:a aac -b:a 32k -ac 1 \
	-f hls -hls_time 2 -hls_playlist_type vod -hls_segment_filename "$out/seg%02d.ts" \
	"$out/index.m3u8"
ls -l "$out"
