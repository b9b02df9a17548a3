#!/usr/bin/env bash
# Installs what the tests need and the machine lacks: Go modules, and the
# Debian packages of the real peers the tests drive (redis-server, ffmpeg).
# Installing needs root (CI and the dev machines run as root); without it,
# the missing tools are named and the run stops.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing: ${need[*]} (install them, or run as root so that make installs them)" >&2
		exit 1
	fi
	echo "installing ${need[*]} with apt-get" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

go mod download
