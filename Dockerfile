# Oxcast in a container: built with the command the README's `cargo run --release` proves
# (`cargo build --release --locked`), run on Debian 12's slim image as an unprivileged user, with
# its data (database, recordings, credentials) in the volume /data. `docker compose up --build`
# runs it with the demo in docker-compose.yml; see README "Run with Docker".

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/oxcast /usr/local/bin/oxcast

FROM debian:bookworm-slim
# No packages added: relays to rtmps:// trust the roots built into the binary (webpki-roots), and
# the health check is the binary's own (curl would bring a dozen libraries for one request).
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin oxcast \
 && install -d -o oxcast -g oxcast -m 0750 /data
COPY --from=builder /usr/local/bin/oxcast /usr/local/bin/oxcast
USER oxcast
WORKDIR /data
VOLUME /data
# Every setting can be given as OXCAST__SECTION__KEY (config/default.toml lists them); these are
# the ones a container needs changed.
ENV OXCAST__STORAGE__DIR=/data \
    OXCAST__RTMP__LISTEN=0.0.0.0:1935 \
    OXCAST__HTTP__LISTEN=0.0.0.0:8080
EXPOSE 1935 8080
# GET /healthz on http.listen: 200 while the store answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
  CMD ["oxcast", "--health-check"]
# SIGTERM (docker stop) ends sessions and finalizes recordings; give it time (stop_grace_period in
# docker-compose.yml), or what is cut short is finalized at the next start.
ENTRYPOINT ["oxcast"]
