#!/usr/bin/env bash
# Builds Caddy the way plugin users do, with xcaddy, from this checkout, and
# checks that the result lists the module. CI runs it after make test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$(go env GOPATH)/bin"
command -v xcaddy >/dev/null 2>&1 || go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Naming the zero version keeps `go get` from looking the module up in the
# module proxy (which answers 400 for unknown modules here) or on GitHub.
GONOPROXY=github.com/streamlimit xcaddy build v2.11.9 --output "$out/caddy" \
	--with github.com/streamlimit/caddy-streamlimit@v0.0.0-00010101000000-000000000000=.
modules=$("$out/caddy" list-modules)
for m in http.handlers.stream_limit admin.api.stream_limit stream_limit.stores.memory stream_limit.stores.redis; do
	grep -qx "$m" <<<"$modules" || { echo "xcaddy-built Caddy lacks $m" >&2; exit 1; }
done
echo "xcaddy build: ok (http.handlers.stream_limit, admin.api.stream_limit listed)"
