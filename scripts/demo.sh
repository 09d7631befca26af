#!/usr/bin/env bash
# The main job, from a clean clone: install what is missing, build, start Kafka,
# ClickHouse, the correlator and the API, replay a three-node recording through an
# agent per node, and print one flow's cross-node timeline. Leaves everything up
# for exploring; `npm run demo -- stop` stops it all.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
var=${HOPTRACE_VAR:-$root/var}
ht() { node --enable-source-maps "$root/dist/services/cli/main.js" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ ${1:-} == stop ]]; then
  bash scripts/services.sh stop correlator api
  bash deploy/local/infra.sh down
  exit 0
fi

say "setup (idempotent: Debian packages, npm packages, Kafka jars)"
bash scripts/setup.sh
npm run --silent build

say "Kafka and ClickHouse on 127.0.0.1"
bash deploy/local/infra.sh up

say "correlator and API"
bash scripts/services.sh start correlator api

events=${HOPTRACE_DEMO_EVENTS:-60000}
rec="$var/demo/recording-$events"
if [[ ! -f $rec/node-c.hoprec ]]; then
  say "generating a three-node recording ($events events, fixed seed)"
  ht generate --out "$rec" --events "$events" --seed 7
fi

say "replaying it: one agent per node -> Kafka"
ht replay "$rec"/node-a.hoprec "$rec"/node-b.hoprec "$rec"/node-c.hoprec

say "waiting for the correlator to store every event in ClickHouse"
ch="http://127.0.0.1:${HOPTRACE_CLICKHOUSE_HTTP_PORT:-18123}/"
db=${HOPTRACE_CLICKHOUSE_DB:-hoptrace}
for i in $(seq 120); do
  n=$(curl -fsS --data-binary "SELECT uniqExact(agent, boot, seq) FROM $db.hop_events FINAL" "$ch" 2>/dev/null || echo 0)
  printf '\r  %s / %s events stored' "$n" "$events"
  [[ $n == "$events" ]] && break
  sleep 1
done
echo
[[ $n == "$events" ]] || { echo "demo: only $n of $events events stored; see $var/log/correlator.log" >&2; exit 1; }

say "recent flows (hoptrace flows)"
ht flows --limit 5
flow=$(ht flows --limit 1 --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);process.stdout.write(String((j.flows??j)[0].flowId))})')

say "one flow's cross-node timeline (hoptrace timeline $flow)"
ht timeline "$flow"

api="http://${HOPTRACE_API_HOST:-127.0.0.1}:${HOPTRACE_API_PORT:-8080}"
say "done"
cat <<MSG
API:       $api   (try: curl '$api/api/v1/flows?limit=5')
CLI:       bin/hoptrace flows --help ; bin/hoptrace timeline <flowId>
Logs:      $var/log/
Stop all:  npm run demo -- stop
MSG
