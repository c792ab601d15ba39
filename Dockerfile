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
COPY . .
RUN cargo build --release --locked

# --- run --------------------------------------------------------------------
FROM debian:bookworm-slim
# curl serves the compose file's health checks (GET /readyz).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/*
# An unprivileged user; keys/ and data/ are created owned by it so that fresh
# named volumes mounted there inherit that ownership.
RUN useradd --system --no-create-home --home-dir /app --shell /usr/sbin/nologin baton \
    && mkdir -p /app/keys /app/data \
    && chown baton:baton /app/keys /app/data \
    && chmod 700 /app/keys
WORKDIR /app
COPY --from=builder /src/target/release/baton /usr/local/bin/baton
COPY policies/ /app/policies/
USER baton
ENV BATON_LISTEN=0.0.0.0:8080 \
    BATON_ISSUER=http://localhost:8080
EXPOSE 8080
# `docker stop` sends SIGTERM, on which the broker shuts down gracefully.
ENTRYPOINT ["baton"]
CMD ["serve"]
