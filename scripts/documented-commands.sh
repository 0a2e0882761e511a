#!/usr/bin/env bash
# Runs every `cargo run` command that README.md and docs/ show, with its program arguments
# replaced by `--help`: each must resolve its package, binary and features, build, and start
# (those with `--features` are resolved only: see below).
# The main job itself runs in full in scripts/test.sh. `--list` prints the commands only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

commands() {
    {
        # Inline code: `cargo run ...`
        grep -ohE '`cargo run[^`]*`' README.md docs/*.md | tr -d '`'
        # Lines of code blocks that start with the command.
        grep -hE '^\s*cargo run' README.md docs/*.md
    } | sed -E \
        -e 's/[[:space:]]+#.*$//' \
        -e 's/[[:space:]]*\\$//' \
        -e 's/^[[:space:]]+//' \
        -e 's/ -- .*$//' \
        -e 's/$/ -- --help/' |
        sort -u
}

if [[ "${1:-}" == "--list" ]]; then
    commands
    exit 0
fi

# A command with `--features` would build Burn again in release with other features, for
# twenty minutes or more per feature: CI cannot afford that. Those commands are checked here for
# what can go wrong in the command itself (the package, each feature and the binary exist);
# their code is compiled, with every feature on and warnings denied, by
# `cargo clippy --workspace --all-targets --all-features` in scripts/test.sh.
resolves_without_building() {
    local command=$1 package="" features="" binary=""
    # shellcheck disable=SC2086 # the command's words, on purpose
    set -- $command
    while (($#)); do
        case $1 in
        -p | --package) package=$2; shift ;;
        --features) features=$2; shift ;;
        --bin) binary=$2; shift ;;
        --) break ;;
        esac
        shift
    done
    # cargo tree resolves the package and its features, and fails on an unknown one.
    cargo tree --quiet -p "$package" --features "$features" --depth 0 >/dev/null || return 1
    if [[ -n $binary ]] &&
        ! cargo metadata --format-version 1 --no-deps |
        grep -q "\"kind\":\[\"bin\"\],\"crate_types\":\[\"bin\"\],\"name\":\"$binary\""; then
        printf 'no binary %s in package %s\n' "$binary" "$package"
        return 1
    fi
}

count=0
while IFS= read -r command; do
    count=$((count + 1))
    printf '%s\n' "$command"
    if [[ $command == *--features* ]]; then
        if ! output=$(resolves_without_building "$command" 2>&1); then
            printf '%s\n\nFAILED: %s\n' "$output" "$command" >&2
            exit 1
        fi
        printf '  resolves (package, features, binary); compiled by the all-features clippy step\n'
        continue
    fi
    # Word splitting is wanted: the documented commands have no quoted arguments.
    # shellcheck disable=SC2086
    if ! output=$($command 2>&1); then
        printf '%s\n\nFAILED: %s\n' "$output" "$command" >&2
        exit 1
    fi
    # clap prints a usage line with --help: a program that ignored it would train instead.
    if ! grep -q '^Usage:' <<<"$output"; then
        printf '%s\n\nFAILED (no usage text): %s\n' "$output" "$command" >&2
        exit 1
    fi
done < <(commands)
printf '%d documented commands resolve; those without --features build and print their usage\n' "$count"
