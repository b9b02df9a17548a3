#!/usr/bin/env bash
# Installs what the tests need and the machine lacks: Go modules, and the
# Debian packages of the real peers the tests drive (redis-server, ffmpeg,
# and the command-line players of the player matrix: mpv, streamlink,
# yt-dlp, VLC).
# With the argument `browser` it also installs what the browser tests need:
# Debian's chromium and, from npm, playwright-core and the stock players
# hls.js, dash.js and Shaka Player (browser/package-lock.json). Without it,
# those are still installed where Chromium already is, so that `make test`
# runs the browser tests on such machines.
# Installing packages needs root (CI and the dev machines run as root);
# without it, the missing tools are named and the run stops.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=${CHROMIUM:-/usr/bin/chromium}
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v mpv >/dev/null 2>&1 || need+=(mpv)
command -v streamlink >/dev/null 2>&1 || need+=(streamlink)
command -v yt-dlp >/dev/null 2>&1 || need+=(yt-dlp)
# VLC without its recommends is the bare binary: vlc-plugin-base brings
# its HTTP access, HLS and DASH (adaptive) and the dummy outputs.
command -v cvlc >/dev/null 2>&1 || need+=(vlc-bin vlc-plugin-base)
# Chromium comes with its recommended packages (fonts among them): that is
# the set seen to render and play video headless here.
browser=()
if [ "${1:-}" = browser ]; then
	[ -x "$chromium" ] || browser+=(chromium)
	command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
fi

if [ $((${#need[@]} + ${#browser[@]})) -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing: ${need[*]} ${browser[*]} (install them, or run as root so that make installs them)" >&2
		exit 1
	fi
	echo "installing ${need[*]} ${browser[*]} with apt-get" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	if [ ${#need[@]} -gt 0 ]; then
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	fi
	if [ ${#browser[@]} -gt 0 ]; then
		apt-get install -y -qq "${browser[@]}" >/dev/null
	fi
fi

go mod download

# npm ci runs when a package browser/package.json pins is missing from
# browser/node_modules or installed at another version: a checkout that
# added a player, or moved one to a new version, gets it on the next run.
browser_packages_installed() {
	node -e '
		const fs = require("fs");
		const pinned = JSON.parse(fs.readFileSync("browser/package.json", "utf8")).dependencies;
		const installed = (name) => {
			try {
				return JSON.parse(fs.readFileSync(`browser/node_modules/${name}/package.json`, "utf8")).version;
			} catch {
				return null;
			}
		};
		process.exit(Object.entries(pinned).every(([name, version]) => installed(name) === version) ? 0 : 1);
	'
}

if [ -x "$chromium" ] && command -v npm >/dev/null 2>&1 && ! browser_packages_installed; then
	echo "installing playwright-core and the players for the browser tests (npm ci in browser/)" >&2
	if ! npm ci --prefix browser --no-audit --no-fund --loglevel=error >/dev/null; then
		# Asked for, the browser test must run; otherwise it is skipped
		# (or fails, under CI=true).
		[ "${1:-}" = browser ] && exit 1
		echo "npm ci failed: make test skips the browser tests (fails them under CI=true)" >&2
	fi
fi
