#!/usr/bin/env bash
# Runs the side-by-side comparison of akstore and etcd that docs/benchmarks.md describes.
# It builds both binaries in release mode and installs Debian's etcd-server when etcd is
# missing and this user may install packages. Then `akstore-bench compare` starts both servers
# on 127.0.0.1 with temporary data, runs every workload, stops them and prints the tables.
# Arguments go on to `akstore-bench compare` (see `akstore-bench compare --help`).
# A full run takes about 6 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"

cargo build --release --locked -p akstore -p akstore-bench

install_etcd() {
    local -a sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
            echo "bench: etcd is missing and installing packages needs root; skipping etcd" >&2
            return 1
        fi
        sudo=(sudo -n)
    fi
    if ! command -v apt-get >/dev/null; then
        echo "bench: etcd is missing and this system has no apt-get; skipping etcd" >&2
        return 1
    fi
    echo "bench: installing Debian's etcd-server package" >&2
    "${sudo[@]}" apt-get update &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server
}

if ! command -v etcd >/dev/null; then
    # A failed install leaves etcd missing, which the next check reports.
    install_etcd || true
fi
if command -v etcd >/dev/null; then
    etcd_args=(--etcd "$(command -v etcd)")
else
    echo "bench: etcd is not available; the tables will have no etcd column" >&2
    etcd_args=(--no-etcd)
fi

exec "${target_dir}/release/akstore-bench" compare \
    --akstore "${target_dir}/release/akstore" \
    --json "${target_dir}/bench/results.json" \
    "${etcd_args[@]}" "$@"
