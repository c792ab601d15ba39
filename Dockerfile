# Baton broker image: build with the Rust toolchain, run on a slim Debian.
#
#   docker compose up --build        (see docker-compose.yml)

# --- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder
# openssl-sys builds against the system OpenSSL.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies first, in a layer of their own that only a change of
# Cargo.toml or Cargo.lock rebuilds: the manifest with stub sources (the
# benches are declared by path, so they need a stub too).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' >src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' >benches/core.rs \
    && cp benches/core.rs benches/load.rs \
    && cargo build --release --locked \
    && rm -r src
# Then Baton itself. COPY keeps the files' times, which may be older than the
# stubs' build: touching the crate roots makes cargo rebuild it.
COPY src/ src/
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked

# --- run --------------------------------------------------------------------
FROM debian:bookworm-slim
# curl serves the compose file's health checks (GET /readyz).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/*
# An unprivileged user; keys/ and data/ are created owned by it so that fresh
# named volumes mounted there inherit that ownership (the broker keeps data/
# at 0700 itself).
RUN useradd --system --no-create-home --home-dir /app --shell /usr/sbin/nologin baton \
    && mkdir -p /app/keys /app/data \
    && chown baton:baton /app/keys /app/data \
    && chmod 700 /app/keys
WORKDIR /app
COPY --from=builder /src/target/release/baton /usr/local/bin/baton
# No policies in the image: they carry client secrets and change while the
# broker runs, so they are mounted at /app/policies (read-only will do).
USER baton
ENV BATON_LISTEN=0.0.0.0:8080 \
    BATON_ISSUER=http://localhost:8080
EXPOSE 8080
# `docker stop` sends SIGTERM, on which the broker shuts down gracefully.
ENTRYPOINT ["baton"]
CMD ["serve"]
