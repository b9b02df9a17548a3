# Caddy with stream_limit, built with xcaddy from this checkout, running the
# demo Caddyfile and media:
#
#   docker build -f xcaddy.Dockerfile -t caddy-streamlimit .
#   docker run --rm -p 8080:8080 caddy-streamlimit
#
# then open http://localhost:8080/ for the demo page.
#
# In a Dockerfile of your own, build from the published module instead:
#   xcaddy build v2.11.9 --with github.com/streamlimit/caddy-streamlimit

FROM caddy:2.11.9-builder AS builder
WORKDIR /src/caddy-streamlimit
COPY . .
# The module is replaced by this checkout. Naming a version keeps `go get`
# from asking the module proxy or GitHub about it (a proxy that answers 400
# for unknown modules would fail the build).
RUN GONOPROXY=github.com/streamlimit xcaddy build v2.11.9 \
	--output /usr/bin/caddy \
	--with github.com/streamlimit/caddy-streamlimit@v0.0.0-00010101000000-000000000000=/src/caddy-streamlimit

FROM caddy:2.11.9
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
COPY Caddyfile /etc/caddy/Caddyfile
COPY demo/media /srv/demo/media
COPY demo/www /srv/demo/www
# The demo listens on :8080 for players, serves its origin to itself on
# localhost:8081, and keeps the admin API on localhost inside the container.
ENV STREAMLIMIT_ADDR=:8080 \
	STREAMLIMIT_ORIGIN=localhost:8081 \
	STREAMLIMIT_ADMIN=localhost:2019 \
	STREAMLIMIT_MEDIA=/srv/demo/media \
	STREAMLIMIT_WWW=/srv/demo/www
EXPOSE 8080
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
