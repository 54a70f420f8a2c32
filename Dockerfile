# The `callhook` binary in a small, non-root image.
#
#   docker build -t callhook:dev .
#   docker run --rm -p 8080:8080 callhook:dev            # embedded mode, data in a volume
#   docker compose up --build                            # the production-shaped stack
#
# Build stage: the same toolchain as development and CI (see the README), on the same Debian
# release as the runtime stage so the glibc the binary links against is there at run time.
# rdkafka builds its bundled librdkafka (mklove configure + make) and rusqlite its bundled
# SQLite; both need only what the rust image already has (gcc, make, perl, zlib headers).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock, the ones the tests ran with. No
# BuildKit-only features (cache mounts), so the classic builder of older engines and Debian's
# docker-compose build it too; Docker's layer cache skips this step while the sources are equal.
RUN cargo build --release --locked --bin callhook \
    && install -m 0755 target/release/callhook /usr/local/bin/callhook \
    && rm -rf target

# Runtime stage: glibc, ca-certificates (TLS to brokers), bash (the health check) and the binary.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 callhook \
    && useradd --system --uid 10001 --gid callhook --home-dir /var/lib/callhook \
       --shell /usr/sbin/nologin callhook \
    && install -d -o callhook -g callhook -m 0750 /var/lib/callhook /etc/callhook
COPY --from=build /usr/local/bin/callhook /usr/local/bin/callhook

# The spool / embedded raw log and the SQLite sink live here; mount a volume on it.
VOLUME ["/var/lib/callhook"]
WORKDIR /var/lib/callhook
USER callhook:callhook
ENV RUST_LOG=info

# 8080: the public receiver (vendors push to /hooks/<source>).
# 9464: the admin listener (/metrics, /healthz, /readyz); keep it on a private network.
EXPOSE 8080 9464

# /healthz on the admin port, with bash's /dev/tcp (no curl in the image). A config that moves
# the admin listener off 9464 must override this check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["callhook"]
# Without arguments: every stage in one process (embedded mode), reachable from outside.
CMD ["--log-format", "json", "serve", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9464", "--data-dir", "/var/lib/callhook"]
