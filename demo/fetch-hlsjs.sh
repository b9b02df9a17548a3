#!/usr/bin/env bash
# Vendors hls.js for the demo page: the built file of the published npm
# package, with its license, into demo/www/assets/hls.js. The result is
# committed, so the demo needs neither npm nor a network; this script says
# where it came from and checks it is that file. Needs npm.
set -euo pipefail
version=1.7.4
sha256=482cccb3a224554f64d8c2cf0d335dba4a3819bdb726afbfddfe15de4c277d82
dest="$(cd "$(dirname "$0")" && pwd)/www/assets/hls.js"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "hls.js@$version" >/dev/null && tar xzf "hls.js-$version.tgz")
echo "$sha256  $work/package/dist/hls.light.min.js" | sha256sum --check --quiet
mkdir -p "$dest"
# The light build: playback without the alternate audio, subtitle and DRM
# code the demo does not use.
cp "$work/package/dist/hls.light.min.js" "$dest/"
cp "$work/package/LICENSE" "$dest/LICENSE"
echo "hls.js $version from the npm registry, checked, in $dest"
