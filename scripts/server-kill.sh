#!/usr/bin/env bash
# Kills a Burn server in the middle of the digits job, several times, and compares each run's
# test accuracy with an undisturbed run's (docs/reliability.md).
#
#   bash scripts/server-kill.sh [TRIALS] [STEP]     (default 8 trials, 0.1 s apart)
#
# Each trial starts two replica servers (`digits-server`), runs
# `digits --backend remote --on-failure redistribute --no-bare` on them, and kills one of them
# (SIGKILL) a different time after the first epoch's line: STEP, 2 STEP, ... A trial passes when the
# job ends with exit code 0, reports the lost server, and reaches the undisturbed run's test
# accuracy. Prints one line per trial and a summary; exits 1 when a trial failed. With LOGS set
# to a directory, every run's output is kept there.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

trials=${1:-8}
step=${2:-0.1}
epochs=4
limit=300 # seconds a run may take before it counts as hung
target=${CARGO_TARGET_DIR:-target}

cargo build --release --quiet -p digits --features remote --bins || exit 1
digits="$target/release/digits"
server="$target/release/digits-server"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
logs=${LOGS:-$work}
mkdir -p "$logs"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}

# Runs the job on two fresh servers; with a delay, kills the second server that long after the
# first epoch's line. Prints "exit-code accuracy lost-reported".
run() {
    local delay=$1 log=$2 ports=() pids=()
    for _ in 1 2; do
        local port
        port=$(free_port)
        "$server" --port "$port" >/dev/null 2>&1 &
        pids+=($!)
        ports+=("$port")
    done
    for port in "${ports[@]}"; do wait_for_port "$port" || return 1; done
    timeout --signal=KILL "$limit" "$digits" --backend remote --on-failure redistribute \
        --no-bare --epochs "$epochs" --artifacts "$work/artifacts" \
        --servers "ws://127.0.0.1:${ports[0]},ws://127.0.0.1:${ports[1]}" >"$log" 2>&1 &
    local job=$!
    if [[ -n $delay ]]; then
        while kill -0 "$job" 2>/dev/null && ! grep -q 'epoch 1/' "$log"; do sleep 0.01; done
        sleep "$delay"
        kill -KILL "${pids[1]}" 2>/dev/null
    fi
    wait "$job"
    local code=$?
    kill -KILL "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
    local accuracy lost=no
    accuracy=$(grep -oE 'DataParallel[^%]*[0-9.]+%' "$log" | grep -oE '[0-9.]+%' | tail -1)
    grep -q "lost" "$log" && lost=yes
    echo "$code ${accuracy:-none} $lost"
}

read -r code reference _ < <(run "" "$logs/undisturbed.log")
if [[ $code != 0 ]]; then
    echo "the undisturbed run failed (exit code $code):"
    cat "$logs/undisturbed.log"
    exit 1
fi
echo "undisturbed: test accuracy $reference"

passed=0
for trial in $(seq "$trials"); do
    delay=$(awk -v t="$trial" -v s="$step" 'BEGIN { printf "%.2f", t * s }')
    read -r code accuracy lost < <(run "$delay" "$logs/trial-$trial.log")
    verdict=failed
    if [[ $code == 0 && $accuracy == "$reference" && $lost == yes ]]; then
        verdict=passed
        passed=$((passed + 1))
    fi
    echo "trial $trial: killed ${delay}s after epoch 1: exit code $code, test accuracy $accuracy, loss reported: $lost: $verdict"
    if [[ $verdict == failed ]]; then
        tail -n 15 "$logs/trial-$trial.log" | sed 's/^/    /'
    fi
done
echo "$passed of $trials trials survived the kill with the undisturbed accuracy"
((passed == trials))
