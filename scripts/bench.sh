#!/usr/bin/env bash
# One benchmark from one command: installs what is missing, builds, starts the local
# Kafka and ClickHouse if they are not running (and leaves them up for the next run),
# then runs dist/bench/NAME.js with the remaining arguments.
#   bash scripts/bench.sh live-capture --sections kernel
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
name=${1:?usage: scripts/bench.sh NAME [args...] (a file in bench/, without .ts)}
shift
[[ -f bench/$name.ts ]] || { echo "bench: no bench/$name.ts" >&2; exit 2; }
bash scripts/setup.sh >&2
npm run --silent build >&2
bash deploy/local/infra.sh up >&2
exec node "dist/bench/$name.js" "$@"
