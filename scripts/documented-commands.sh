#!/usr/bin/env bash
# Runs every `cargo run` command that README.md and docs/ show, with its program arguments
# replaced by `--help`: each must resolve its package, binary and features, build, and start.
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

count=0
while IFS= read -r command; do
    count=$((count + 1))
    printf '%s\n' "$command"
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
printf '%d documented commands resolve and print their usage\n' "$count"
