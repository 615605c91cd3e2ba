# Multi-stage build: compile with the full toolchain, ship a small runtime image that
# runs as a non-root user with its data in a volume.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest names these targets and the bench/ workspace member; cargo refuses to
# load it without them, although only livebase is built.
COPY tests ./tests
COPY benches ./benches
COPY bench/Cargo.toml ./bench/Cargo.toml
COPY bench/src ./bench/src
RUN cargo build --release --locked -p livebase && strip target/release/livebase

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app livebase
WORKDIR /app
COPY --from=build /src/target/release/livebase /usr/local/bin/livebase
COPY schema ./schema
COPY actions ./actions
COPY queries ./queries
RUN mkdir -p /app/data && chown -R livebase /app/data
USER livebase
VOLUME ["/app/data"]
ENV LIVEBASE_LISTEN=0.0.0.0:8080 \
    LIVEBASE_DATA_DIR=/app/data
EXPOSE 8080
ENTRYPOINT ["livebase"]
