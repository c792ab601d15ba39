#!/usr/bin/env bash
# The one command that runs every check: installs what the tests need on a
# fresh Debian machine (Rust toolchain, Python 3 and Node already present),
# then runs clippy, rustfmt, the module-cycle check, the doctests, the
# examples and the test suite.
#
#   ./scripts/test.sh
#
# Works as root, or as a user with sudo. Exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive
# A run in CI builds a fresh clone once: incremental compilation would only
# spend time writing state that no later build reads, and nobody attaches a
# debugger (a failing assertion still names its file and line).
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
    export CARGO_PROFILE_DEV_DEBUG=false
fi

section() {
    printf '\n==> %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when root, else through sudo (never
# prompting when there is no terminal to answer on).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -t 0 ]; then
            sudo "$@"
        else
            sudo -n "$@"
        fi
    else
        die "not root and sudo is not available: cannot run: $*"
    fi
}

is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

# ---------------------------------------------------------------------------
# System packages the tests need. Add new ones to this list only.
#   pkg-config, libssl-dev: the openssl-sys crate builds against OpenSSL
#   curl:                   HTTP checks and the example walk
#   redis-server:           the Redis store's tests start their own server
#   openssl:                the Redis TLS tests make a throwaway CA and certificates
#   chromium:               the console's browser tests (driven by playwright-core)
#   haproxy:                the load balancer of docker-compose.yml, run by the
#                           test of the same topology without containers
#   docker-compose:         loads docker-compose.yml in a test (no daemon needed);
#                           its python3-docker reads the image's build context
# ---------------------------------------------------------------------------
install_system_packages() {
    local packages=(
        pkg-config
        libssl-dev
        curl
        redis-server
        openssl
        chromium
        haproxy
        docker-compose
    )
    section "System packages: ${packages[*]}"
    command -v dpkg >/dev/null 2>&1 || die "dpkg not found: this script expects Debian (install: ${packages[*]})"
    local missing=()
    local package
    for package in "${packages[@]}"; do
        is_installed "$package" || missing+=("$package")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "all present"
        return
    fi
    echo "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# clippy and rustfmt are rustup components that a minimal toolchain may lack.
install_rust_components() {
    section "Rust toolchain"
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (https://rustup.rs)"
    local missing=()
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    if [ "${#missing[@]}" -gt 0 ]; then
        command -v rustup >/dev/null 2>&1 || die "missing ${missing[*]} and rustup is not available to add them"
        echo "adding components: ${missing[*]}"
        rustup component add "${missing[@]}"
    fi
    cargo --version
    cargo clippy --version
    cargo fmt --version
}

# ---------------------------------------------------------------------------
# The interop tests' clients (tests/interop/, run by tests/api/interop.rs
# and tests/api/mcp.rs), pinned in their lock files:
#   node/package-lock.json   openid-client, jose, @modelcontextprotocol/sdk,
#                            playwright-core                                 -> node/node_modules/
#   python/requirements.txt  PyJWT[crypto], requests, mcp                    -> python/.venv/
# Each is reinstalled only when its lock file (or the Python) changed.
# ---------------------------------------------------------------------------
install_interop_dependencies() {
    section "Interop test clients (Node, Python)"
    command -v node >/dev/null 2>&1 || die "node not found: the interop tests need Node.js 20 or later"
    command -v npm >/dev/null 2>&1 || die "npm not found: the interop tests need it with Node.js"
    command -v python3 >/dev/null 2>&1 || die "python3 not found: the interop tests need Python 3"
    local node_dir=tests/interop/node
    local python_dir=tests/interop/python
    local want stamp

    want=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
    stamp="$node_dir/node_modules/.installed-lock-sha256"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        echo "node: up to date"
    else
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        printf '%s\n' "$want" >"$stamp"
        echo "node: installed $(cd "$node_dir" && npm ls --depth=0 2>/dev/null | tail -n +2 | sed 's/^[^a-z@]*//' | tr '\n' ' ')"
    fi

    # Debian splits venv's pip bootstrap into python3-venv.
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo "installing: python3-venv"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    fi
    want="$(sha256sum "$python_dir/requirements.txt" | cut -d' ' -f1) $(python3 --version 2>&1)"
    stamp="$python_dir/.venv/.installed-requirements-sha256"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        echo "python: up to date"
    else
        rm -rf "$python_dir/.venv"
        python3 -m venv "$python_dir/.venv"
        "$python_dir/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$python_dir/requirements.txt"
        printf '%s\n' "$want" >"$stamp"
        echo "python: installed $("$python_dir/.venv/bin/pip" freeze --disable-pip-version-check | tr '\n' ' ')"
    fi
}

failed=()

# Runs one check; a failure is recorded and the remaining checks still run.
check() {
    local name=$1
    shift
    section "$name"
    local started=$SECONDS
    if ! "$@"; then
        echo "FAILED: $name" >&2
        failed+=("$name")
    fi
    timings+=("$(printf '%-18s %4d s' "$name" $((SECONDS - started)))")
}

timings=()

install_system_packages
install_rust_components
install_interop_dependencies

check "clippy" cargo clippy --all-targets --locked -- -D warnings
check "rustfmt" cargo fmt --check
check "module cycles" python3 scripts/module_cycles.py
# nextest does not run doctests.
check "doctests" cargo test --doc --locked
# The examples' binaries, which tests/api/examples.rs runs as a user would.
check "examples" cargo build --examples --locked
section "Time so far (the suite's own time closes its summary)"
printf '%s\n' "${timings[@]}"
printf '%-18s %4d s\n' "all, so far" "$SECONDS"

# The test suite runs last, so that its summary closes the output.
if cargo nextest --version >/dev/null 2>&1; then
    check "tests (nextest)" cargo nextest run --locked --all-targets --no-fail-fast
else
    check "tests (cargo test)" cargo test --locked --all-targets
fi

if [ "${#failed[@]}" -gt 0 ]; then
    section "Summary"
    printf 'failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
