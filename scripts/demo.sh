#!/usr/bin/env bash
# The main job, from a clean clone, as root: install what is missing, build, start
# Kafka, ClickHouse, the correlator and the API, build the namespace lab (client node,
# load balancer with a VIP, server node with a sidecar REDIRECT), one live eBPF agent
# per node, run normal traffic, then reproduce three incidents and print what
# hoptrace concluded. Leaves everything up for exploring; `npm run demo -- stop`
# stops it all. `npm run demo -- replay` is the no-root variant: a recorded
# three-node capture replayed through the same pipeline.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
var=${HOPTRACE_VAR:-$root/var}
ht() { node --enable-source-maps "$root/dist/services/cli/main.js" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
api="http://${HOPTRACE_API_HOST:-127.0.0.1}:${HOPTRACE_API_PORT:-8080}"

case ${1:-lab} in
  stop)
    ht lab agents stop 2>/dev/null || true
    ht lab down 2>/dev/null || true
    bash scripts/services.sh stop correlator api
    bash deploy/local/infra.sh down
    exit 0
    ;;
  lab | replay) ;;
  *)
    echo "usage: $0 [lab | replay | stop]" >&2
    exit 2
    ;;
esac

say "setup (idempotent: Debian packages, npm packages, Kafka jars) and build"
bash scripts/setup.sh
npm run --silent build

say "Kafka and ClickHouse on 127.0.0.1"
bash deploy/local/infra.sh up

say "correlator and API"
bash scripts/services.sh start correlator api

if [[ ${1:-lab} == replay ]]; then
  events=${HOPTRACE_DEMO_EVENTS:-60000}
  rec="$var/demo/recording-$events"
  [[ -f $rec/node-c.hoprec ]] || ht generate --out "$rec" --events "$events" --seed 7
  say "replaying a three-node recording: one agent per node -> Kafka"
  ht replay "$rec"/node-a.hoprec "$rec"/node-b.hoprec "$rec"/node-c.hoprec
  sleep 3
  ht flows --limit 5
  flow=$(ht flows --limit 1 --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).flows[0].flowId))')
  say "one flow's path (hoptrace path $flow)"
  ht path "$flow"
  printf '\nAPI: %s   Stop everything: npm run demo -- stop\n' "$api"
  exit 0
fi

[[ $(id -u) == 0 ]] || { echo "demo: the lab and live capture need root (try: npm run demo -- replay)" >&2; exit 1; }
say "the lab: node-a (client pod) -> node-lb (VIP 10.96.0.10:80, DNAT) -> node-c (server pod, sidecar REDIRECT :8080 -> :15006)"
ht lab up
ht lab agents start
start=$(date +%s%3N)

say "normal traffic: 500 HTTP requests through the VIP"
ht lab requests 500

say "incident 1: one TCP segment far outside the window, on an established connection (the seed's reset)"
ht lab inject-oow | head -3

say "incident 2: an iptables DROP on the load balancer's FORWARD chain for the backend"
ht lab drop node-lb | tail -1
ht lab requests 3 --timeout-ms 1500 | head -1 || true
ht lab drop node-lb --clear | tail -1

say "incident 3: 20 ms of delay on the load balancer -> server link"
ht lab netem lb-c --delay 20ms | tail -1
slow_from=$(date +%s%3N)
ht lab requests 100 | head -1
slow_to=$(date +%s%3N)
ht lab netem lb-c --clear | tail -1

say "waiting for the correlator to catch up (hoptrace lag --wait), then for the flows to be judged"
# A backlog on the hops topic (events from earlier runs the correlator has not read yet)
# would otherwise leave the report below without this run's flows.
ht lag --wait 180 || echo "demo: the report below may miss this run's latest flows" >&2
sleep 8

say "what hoptrace found (hoptrace report --since ${start}; slow hops while the delay was on)"
ht report --since "$start" --service 10.96.0.10 --slow-ms 2 --latency-since "$slow_from" --latency-until "$slow_to"

cat <<MSG

Explore: bin/hoptrace incidents | explain <flow> | path <flow> | timeline <flow> | latency --since 10m
API:     $api   (e.g. curl '$api/api/v1/incidents?since=15m')
Logs:    $var/log/  (agents: agent-node-*.log)
Stop:    npm run demo -- stop
MSG
