#!/usr/bin/env bash
# Makes the test media of the player matrix (issue 13): one 90-second title laid out
# the ways packagers lay it out, under the directory given (default
# ./out). Tests run it once and keep the result by this script's hash; it
# needs ffmpeg (make test installs it). Each layout is what a packager's
# stock output looks like, not something shaped for the limiter:
#
#   flat/      ffmpeg HLS: index.m3u8 beside seg000.ts ...
#   fmp4/      ffmpeg HLS, fMP4 segments with EXT-X-MAP (init.mp4)
#   renditions/ master.m3u8, one subdirectory per rendition (v0/, v1/),
#              audio as its own rendition (EXT-X-MEDIA, a/)
#   updir/     video/v0/index.m3u8 lists ../segments/a000.ts (segments
#              kept apart from the renditions' playlists, as many origins
#              store them)
#   abspath/   manifests/x/index.m3u8 lists /abspath/segments/a000.ts
#   sameurl/   manifests/x/index.m3u8 lists http://__HOST__/sameurl/...:
#              the test origin writes the request's own host there, as
#              nginx-vod-module writes absolute URLs by default
#   dash/      ffmpeg DASH, SegmentTemplate with $Number$
#   dashtl/    ffmpeg DASH, SegmentTemplate with a SegmentTimeline
#   mp4/       one progressive MP4
set -euo pipefail
out=${1:-out}
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cd "$out.tmp"

dur=90
src=(-f lavfi -i "testsrc2=size=160x90:rate=12:duration=$dur"
	-f lavfi -i "sine=frequency=440:sample_rate=22050:duration=$dur")
enc=(-c:v libx264 -profile:v baseline -preset ultrafast -b:v 40k -g 24 -keyint_min 24 -sc_threshold 0
	-c:a aac -b:a 24k -ac 1)
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }

mkdir -p flat fmp4 renditions updir/video/v0 updir/video/segments abspath/manifests/x abspath/segments \
	sameurl/manifests/x sameurl/segments dash dashtl mp4

ff "${src[@]}" "${enc[@]}" -f hls -hls_time 2 -hls_playlist_type vod \
	-hls_segment_filename flat/seg%03d.ts flat/index.m3u8

ff "${src[@]}" "${enc[@]}" -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_type fmp4 \
	-hls_fmp4_init_filename init.mp4 -hls_segment_filename fmp4/seg%03d.m4s fmp4/index.m3u8

# Two video renditions and the audio on its own, as an ABR packager does.
ff "${src[@]}" -map 0:v -map 0:v -map 1:a \
	-c:v libx264 -profile:v baseline -preset ultrafast -g 24 -keyint_min 24 -sc_threshold 0 \
	-b:v:0 40k -s:v:0 160x90 -b:v:1 20k -s:v:1 96x54 -c:a aac -b:a 24k -ac 1 \
	-f hls -hls_time 2 -hls_playlist_type vod -master_pl_name master.m3u8 \
	-var_stream_map "v:0,agroup:aud,name:v0 v:1,agroup:aud,name:v1 a:0,agroup:aud,name:a" \
	-hls_segment_filename 'renditions/%v/seg%03d.ts' 'renditions/%v/index.m3u8'

# The flat layout's segments, moved where the other layouts keep them.
for f in flat/seg*.ts; do
	n=$(basename "$f" .ts)
	cp "$f" "updir/video/segments/a${n#seg}.ts"
	cp "$f" "abspath/segments/a${n#seg}.ts"
	cp "$f" "sameurl/segments/a${n#seg}.ts"
done
sed -E 's#^seg([0-9]+)\.ts$#../segments/a\1.ts#' flat/index.m3u8 >updir/video/v0/index.m3u8
sed -E 's#^seg([0-9]+)\.ts$#/abspath/segments/a\1.ts#' flat/index.m3u8 >abspath/manifests/x/index.m3u8
sed -E 's#^seg([0-9]+)\.ts$#http://__HOST__/sameurl/segments/a\1.ts#' flat/index.m3u8 >sameurl/manifests/x/index.m3u8

ff "${src[@]}" "${enc[@]}" -f dash -seg_duration 2 -use_template 1 -use_timeline 0 \
	-init_seg_name 'init-$RepresentationID$.m4s' -media_seg_name 'chunk-$RepresentationID$-$Number%03d$.m4s' \
	dash/manifest.mpd
ff "${src[@]}" "${enc[@]}" -f dash -seg_duration 2 -use_template 1 -use_timeline 1 \
	-init_seg_name 'init-$RepresentationID$.m4s' -media_seg_name 'chunk-$RepresentationID$-$Number%03d$.m4s' \
	dashtl/manifest.mpd

ff "${src[@]}" "${enc[@]}" -movflags +faststart mp4/video.mp4

cd ..
rm -rf "$out"
mv "$out.tmp" "$out"
