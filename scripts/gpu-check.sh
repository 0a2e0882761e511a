#!/usr/bin/env bash
# Exactness and throughput of burn-data-parallel on NVIDIA GPUs.
#
#   scripts/gpu-check.sh build             on a machine with Rust (no GPU needed): builds the
#                                          release binary into target/gpu-check/gpu-check
#   scripts/gpu-check.sh run [BIN] [ARGS]  on the GPU machine (no Rust needed): runs BIN
#                                          (default target/gpu-check/gpu-check) with ARGS,
#                                          within 5 minutes
#
# ARGS: --steps N (timed steps per configuration and round, default 10), --rounds R (default 5),
#       --cpu (CPU stand-ins, what CI runs).
# Exit codes: 0 every check passes, 1 a check fails, 2 bad arguments, 3 no GPU, 124 time out.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
default_binary="$root/target/gpu-check/gpu-check"

case "${1:-}" in
  build)
    cargo build --manifest-path "$root/Cargo.toml" --release -p burn-data-parallel-tests --bin gpu-check
    mkdir -p "$(dirname "$default_binary")"
    cp "$root/target/release/gpu-check" "$default_binary"
    echo "built $default_binary: copy it to the GPU machine and run scripts/gpu-check.sh run"
    ;;
  run)
    shift
    binary="$default_binary"
    if [[ $# -gt 0 && "$1" != --* ]]; then
      binary="$1"
      shift
    fi
    if [[ ! -x "$binary" ]]; then
      echo "gpu-check: no binary at $binary; build it first with scripts/gpu-check.sh build" >&2
      exit 2
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
      nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv || true
    fi
    exec timeout 300 "$binary" "$@"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
