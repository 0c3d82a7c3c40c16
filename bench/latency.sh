#!/usr/bin/env bash
# Prints this machine's latency of one dependent random memory read, with 4 KiB pages and with
# transparent huge pages: the floor under `verify/1m_keys` (see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
cc -O2 -o "$OUT" latency.c
"$OUT" 0
"$OUT" 1
