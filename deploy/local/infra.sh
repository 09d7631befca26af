#!/usr/bin/env bash
# Runs the single-node Kafka broker and ClickHouse server that hoptrace uses on one machine
# (local development, integration tests, CI), as plain processes owned by this checkout.
#
# Usage: deploy/local/infra.sh COMMAND [kafka|clickhouse]...   (default: both)
#   up       start whatever is not running, then wait until healthy; exit 0 if already up
#   down     stop what this script started: SIGTERM, SIGKILL after HOPTRACE_STOP_TIMEOUT s
#   status   print state, pid and ports; exit 0 only if every service named is healthy
#   wait     block until healthy, or fail after HOPTRACE_INFRA_TIMEOUT s
#   logs     print the end of the logs (HOPTRACE_LOG_LINES lines, default 40); `logs -f` follows them
#
# Env (default):
#   HOPTRACE_VAR (<repo>/var)                 state: kafka/ clickhouse/ log/ run/
#   HOPTRACE_KAFKA_PORT (19092)               broker listener, 127.0.0.1 only
#   HOPTRACE_KAFKA_CONTROLLER_PORT (19093)    KRaft controller listener
#   HOPTRACE_CLICKHOUSE_HTTP_PORT (18123)
#   HOPTRACE_CLICKHOUSE_TCP_PORT (19000)
#   HOPTRACE_CLICKHOUSE_INTERSERVER_PORT (19009)
#   HOPTRACE_KAFKA_HEAP (-Xms128m -Xmx512m)   JVM heap options for the broker
#   HOPTRACE_INFRA_TIMEOUT (120)              seconds `up` and `wait` wait for health
#   HOPTRACE_STOP_TIMEOUT (20)                seconds `down` waits before SIGKILL
#
# The machine is shared (other checkouts, system services, other people's servers), so this
# script only ever signals a process whose pid file it wrote and whose command line names this
# checkout's generated config, never touches system services or /etc, and refuses to start on
# a port someone else holds. Prerequisites come from scripts/setup.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO="$(cd "$HERE/../.." && pwd -P)"

KAFKA_PORT="${HOPTRACE_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${HOPTRACE_KAFKA_CONTROLLER_PORT:-19093}"
CLICKHOUSE_HTTP_PORT="${HOPTRACE_CLICKHOUSE_HTTP_PORT:-18123}"
CLICKHOUSE_TCP_PORT="${HOPTRACE_CLICKHOUSE_TCP_PORT:-19000}"
CLICKHOUSE_INTERSERVER_PORT="${HOPTRACE_CLICKHOUSE_INTERSERVER_PORT:-19009}"
KAFKA_HEAP="${HOPTRACE_KAFKA_HEAP:--Xms128m -Xmx512m}"
INFRA_TIMEOUT="${HOPTRACE_INFRA_TIMEOUT:-120}"
STOP_TIMEOUT="${HOPTRACE_STOP_TIMEOUT:-20}"

log() { printf 'infra: %s\n' "$*" >&2; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }

# --- validation: fail before anything starts -------------------------------------------------

# VAR is substituted into XML, Java properties (where ',' separates log dirs and '\' escapes)
# and a classpath; a plain path keeps all of them valid without escaping.
plain_path() { [[ $1 =~ ^[A-Za-z0-9._/+-]+$ ]] || die "HOPTRACE_VAR=$1: use a path of letters, digits and . _ / + - only"; }
VAR="${HOPTRACE_VAR:-$REPO/var}"
plain_path "$VAR"
mkdir -p "$VAR"
VAR="$(cd "$VAR" && pwd -P)"
plain_path "$VAR"
LOG="$VAR/log"
RUN="$VAR/run"

for v in KAFKA_PORT KAFKA_CONTROLLER_PORT CLICKHOUSE_HTTP_PORT CLICKHOUSE_TCP_PORT CLICKHOUSE_INTERSERVER_PORT; do
  if [[ ! ${!v} =~ ^[1-9][0-9]{0,4}$ ]] || ((${!v} > 65535)); then die "HOPTRACE_$v=${!v} is not a port number"; fi
done
[[ $(printf '%s\n' "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT" \
  "$CLICKHOUSE_INTERSERVER_PORT" | sort -u | wc -l) -eq 5 ]] || die "the five HOPTRACE_*_PORT values must differ"
for v in INFRA_TIMEOUT STOP_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "HOPTRACE_$v=${!v} is not a number of seconds"
done

# --- per-service facts ----------------------------------------------------------------------

ports_of() { # the ports a service will listen on if started now
  case $1 in
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
    clickhouse) echo "$CLICKHOUSE_HTTP_PORT $CLICKHOUSE_TCP_PORT $CLICKHOUSE_INTERSERVER_PORT" ;;
  esac
}

# Our generated config path is in our servers' command lines and in nobody else's: it is how
# a pid is proven ours even after pid reuse, and how a server started from another checkout
# (another var dir) is told apart.
marker_of() {
  case $1 in
    kafka) echo "$VAR/kafka/server.properties" ;;
    clickhouse) echo "$VAR/clickhouse/etc/config.xml" ;;
  esac
}

log_files_of() {
  case $1 in
    kafka) echo "$LOG/kafka.log $LOG/kafka.out" ;;
    clickhouse) echo "$LOG/clickhouse-server.err.log $LOG/clickhouse-server.log $LOG/clickhouse.out" ;;
  esac
}

main_log_of() {
  case $1 in
    kafka) echo "$LOG/kafka.log (JVM output: $LOG/kafka.out)" ;;
    clickhouse) echo "$LOG/clickhouse-server.err.log (also clickhouse-server.log, clickhouse.out)" ;;
  esac
}

# --- processes ------------------------------------------------------------------------------

cmdline_of() { { tr '\0\n' '  ' <"/proc/$1/cmdline"; } 2>/dev/null || true; }

# A zombie or an exited process has an empty cmdline, so it never counts as ours.
is_ours() { # pid service
  local cmd
  cmd="$(cmdline_of "$1")"
  [[ -n $cmd && $cmd == *"$(marker_of "$2")"* ]]
}

running_pid() { # service -> prints the pid if our server is running
  local pid
  [[ -f $RUN/$1.pid ]] || return 1
  pid="$(<"$RUN/$1.pid")"
  [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid" "$1" || return 1
  echo "$pid"
}

# The ports a running instance was started with; the environment may differ since.
recorded_ports_of() {
  if [[ -f $RUN/$1.ports ]]; then cat "$RUN/$1.ports"; else ports_of "$1"; fi
}

port_var_of() { # port -> the variable that set it
  local v
  for v in KAFKA_PORT KAFKA_CONTROLLER_PORT CLICKHOUSE_HTTP_PORT CLICKHOUSE_TCP_PORT CLICKHOUSE_INTERSERVER_PORT; do
    [[ ${!v} != "$1" ]] || { echo "HOPTRACE_$v"; return; }
  done
}

forget() { rm -f "$RUN/$1.pid" "$RUN/$1.ports"; }

listener_pids() { # port -> pids listening on it (any address); no output if free
  ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

port_in_use() { [[ -n "$(ss -Hltn "sport = :$1")" ]]; }

# Refuses to start on a port held by anyone else. A server of ours whose pid file was lost
# (var/run deleted, say) is adopted instead, so that `down` can still stop it.
check_ports() { # service
  local port pid cmd
  command -v ss >/dev/null || die "ss (iproute2) is needed to check ports; run scripts/setup.sh"
  for port in $(ports_of "$1"); do
    port_in_use "$port" || continue
    for pid in $(listener_pids "$port"); do
      if is_ours "$pid" "$1"; then
        log "$1: adopting running server pid $pid found on port $port (its pid file was missing)"
        echo "$pid" >"$RUN/$1.pid"
        ports_of "$1" >"$RUN/$1.ports"
        return 0
      fi
    done
    pid="$(listener_pids "$port" | head -n1)"
    cmd="${pid:+ by pid $pid ($(cmdline_of "$pid" | cut -c1-120))}"
    die "$1: port $port is already in use${cmd:- by a process not visible here}, which is not a $1 server this script started for $VAR. Stop it, or give $1 another port: $(port_var_of "$port")=<free port> $0 up"
  done
}

render() { # template output KEY=VALUE...
  local text kv
  text="$(<"$1")"
  for kv in "${@:3}"; do
    # Quoted replacement: bash 5.2 would otherwise expand '&' in it to the matched text.
    text="${text//"@${kv%%=*}@"/"${kv#*=}"}"
  done
  [[ ! $text =~ @[A-Z_]+@ ]] || die "$1: no value for ${BASH_REMATCH[0]}"
  printf '%s\n' "$text" >"$2.tmp"
  mv "$2.tmp" "$2"
}

launch() { # service logfile command...
  local svc=$1 out=$2 pid
  shift 2
  printf '\n=== %s infra.sh: starting %s\n' "$(date -u +%FT%TZ)" "$svc" >>"$out"
  # Own session: a Ctrl-C in the terminal that ran `up` must not reach the servers. Started
  # from a script (no job control) the child is no group leader, so setsid execs in place
  # and $! is the server's own pid.
  # 9>&-: the server must not inherit (and so hold forever) the lock `up` holds.
  setsid "$@" >>"$out" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$RUN/$svc.pid"
  ports_of "$svc" >"$RUN/$svc.ports"
  log "$svc: started pid $pid on 127.0.0.1 port(s) $(ports_of "$svc")"
}

start_clickhouse() {
  local bin etc="$VAR/clickhouse/etc"
  bin="$(command -v clickhouse-server || true)"
  [[ -n $bin ]] || bin=/usr/sbin/clickhouse-server # not on a non-root user's PATH
  [[ -x $bin ]] || die "clickhouse-server not found; run scripts/setup.sh"
  mkdir -p "$etc" "$VAR/clickhouse/"{data,tmp,user_files,format_schemas} "$LOG"
  local subst=(VAR="$VAR" CLICKHOUSE_HTTP_PORT="$CLICKHOUSE_HTTP_PORT" CLICKHOUSE_TCP_PORT="$CLICKHOUSE_TCP_PORT"
    CLICKHOUSE_INTERSERVER_PORT="$CLICKHOUSE_INTERSERVER_PORT")
  render "$HERE/clickhouse/config.xml.in" "$etc/config.xml" "${subst[@]}"
  render "$HERE/clickhouse/users.xml.in" "$etc/users.xml" "${subst[@]}"
  # Runs as the invoking user, root included: 18.16 does not refuse root, and the data
  # directory belongs to whoever runs this script.
  launch clickhouse "$LOG/clickhouse.out" "$bin" --config-file="$etc/config.xml"
}

start_kafka() {
  local libs="$VAR/kafka/libs" dir="$VAR/kafka" id heap
  compgen -G "$libs/kafka_2.13-*.jar" >/dev/null || die "kafka jars missing in $libs; run scripts/setup.sh"
  command -v java >/dev/null || die "java not found (Java 17 is needed for the kafka broker)"
  mkdir -p "$dir/data" "$LOG"
  local subst=(VAR="$VAR" KAFKA_PORT="$KAFKA_PORT" KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT")
  render "$HERE/kafka/server.properties.in" "$dir/server.properties" "${subst[@]}"
  render "$HERE/kafka/log4j.properties.in" "$dir/log4j.properties" "${subst[@]}"
  local java=(java -Dlog4j.configuration="file:$dir/log4j.properties" -cp "$libs/*")

  # KRaft storage is formatted once per data dir with a cluster id; formatting again would
  # throw the data away, so the id is kept in var (or recovered from the data dir).
  if [[ ! -f $dir/data/meta.properties ]]; then
    if [[ ! -s $dir/cluster.id ]]; then
      "${java[@]}" kafka.tools.StorageTool random-uuid >"$dir/cluster.id.tmp" 2>>"$LOG/kafka.out"
      mv "$dir/cluster.id.tmp" "$dir/cluster.id"
    fi
    id="$(<"$dir/cluster.id")"
    log "kafka: formatting KRaft storage in $dir/data (cluster id $id)"
    "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >>"$LOG/kafka.out" 2>&1 ||
      die "kafka: formatting storage failed; see $LOG/kafka.out"
  elif [[ ! -s $dir/cluster.id ]]; then
    sed -n 's/^cluster\.id=//p' "$dir/data/meta.properties" >"$dir/cluster.id"
  fi

  read -ra heap <<<"$KAFKA_HEAP"
  launch kafka "$LOG/kafka.out" "${java[0]}" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true "${java[@]:1}" kafka.Kafka "$dir/server.properties"
}

# --- health ---------------------------------------------------------------------------------

HEALTH_ERROR=""

healthy() { # service -> 0 if it answers like a working server; HEALTH_ERROR says why not
  local ports port out
  read -ra ports <<<"$(recorded_ports_of "$1")"
  port=${ports[0]}
  case $1 in
    clickhouse)
      # --noproxy: an http_proxy in the environment must not capture loopback requests.
      out="$(curl -sS --noproxy '*' --max-time 2 "http://127.0.0.1:$port/ping" 2>&1)" || true
      [[ $out == "Ok." ]] && return 0
      HEALTH_ERROR="GET http://127.0.0.1:$port/ping: ${out:-no answer}"
      ;;
    kafka)
      [[ -d $REPO/node_modules/kafkajs ]] || die "node_modules/kafkajs is missing (the kafka health check uses it); run scripts/setup.sh"
      out="$(node "$HERE/kafka-health.mjs" "127.0.0.1:$port" 3000 2>&1)" && return 0
      HEALTH_ERROR="${out:-health check failed}"
      ;;
  esac
  return 1
}

# Waits for all named services together, so their start-ups overlap.
# With must_run=1 (after `up`) a server that exits fails at once instead of at the timeout.
wait_healthy() { # must_run service...
  local must_run=$1 svc pid start now
  local -a pending=("${@:2}") left
  start="$(date +%s%N)"
  local deadline=$(($(date +%s) + INFRA_TIMEOUT))
  while ((${#pending[@]})); do
    left=()
    for svc in "${pending[@]}"; do
      if ! pid="$(running_pid "$svc")"; then
        if ((must_run)); then
          forget "$svc"
          # What the server printed since this start (JVM errors, config errors).
          awk '/^=== .* infra.sh: starting /{n=0} {buf[++n]=$0} END{for(i=2;i<=n;i++) print buf[i]}' \
            "$LOG/$svc.out" 2>/dev/null | tail -n 20 >&2 || true
          die "$svc exited during start-up; see $(main_log_of "$svc")"
        fi
        HEALTH_ERROR="not running (start it with: $0 up $svc)"
        left+=("$svc")
      elif healthy "$svc"; then
        now="$(date +%s%N)"
        log "$svc: healthy (pid $pid, port $(recorded_ports_of "$svc" | cut -d' ' -f1)) after $(((now - start) / 1000000)) ms"
      else
        left+=("$svc")
      fi
    done
    pending=("${left[@]+"${left[@]}"}")
    ((${#pending[@]})) || break
    if (($(date +%s) >= deadline)); then
      left=()
      for svc in "${pending[@]}"; do
        healthy "$svc" && continue
        log "$svc: not healthy after ${INFRA_TIMEOUT} s: $HEALTH_ERROR; see $(main_log_of "$svc")"
        left+=("$svc")
      done
      ((${#left[@]})) || break
      die "timed out waiting for: ${left[*]} (a server still starting is left running; '$0 down' stops it)"
    fi
    sleep 0.5
  done
}

# --- commands -------------------------------------------------------------------------------

cmd_up() {
  local svc pid to_start=() to_wait=()
  mkdir -p "$RUN" "$LOG"
  for svc in "$@"; do
    if pid="$(running_pid "$svc")"; then
      if [[ "$(recorded_ports_of "$svc")" != "$(ports_of "$svc")" ]]; then
        die "$svc is running (pid $pid) on port(s) $(recorded_ports_of "$svc"), not the requested $(ports_of "$svc"); run '$0 down $svc' first"
      fi
      if healthy "$svc"; then
        log "$svc: already running and healthy (pid $pid, port(s) $(recorded_ports_of "$svc"))"
        continue
      fi
      log "$svc: running (pid $pid) but not healthy yet; waiting"
    else
      forget "$svc"
      check_ports "$svc"
      running_pid "$svc" >/dev/null || to_start+=("$svc")
    fi
    to_wait+=("$svc")
  done
  # Started only once every port is known to be free, so a conflict leaves nothing half-up.
  for svc in "${to_start[@]+"${to_start[@]}"}"; do "start_$svc"; done
  ((${#to_wait[@]} == 0)) || wait_healthy 1 "${to_wait[@]}"
}

cmd_down() {
  local svc pid stopping=() left i
  for svc in "$@"; do
    if pid="$(running_pid "$svc")"; then
      log "$svc: stopping pid $pid (SIGTERM)"
      kill -TERM "$pid" 2>/dev/null || true
      stopping+=("$svc")
    else
      # A pid file whose process is gone, or is now someone else's, is just stale.
      [[ ! -f $RUN/$svc.pid ]] || log "$svc: not running (removing stale pid file)"
      [[ -f $RUN/$svc.pid ]] || log "$svc: not running"
      forget "$svc"
    fi
  done
  for ((i = 0; i < STOP_TIMEOUT * 10 && ${#stopping[@]}; i++)); do
    left=()
    for svc in "${stopping[@]}"; do
      if running_pid "$svc" >/dev/null; then left+=("$svc"); else
        log "$svc: stopped"
        forget "$svc"
      fi
    done
    stopping=("${left[@]+"${left[@]}"}")
    ((${#stopping[@]})) && sleep 0.1
  done
  for svc in "${stopping[@]+"${stopping[@]}"}"; do
    pid="$(running_pid "$svc")" || { forget "$svc"; continue; }
    log "$svc: still running after ${STOP_TIMEOUT} s; sending SIGKILL to pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do running_pid "$svc" >/dev/null || break; sleep 0.1; done
    running_pid "$svc" >/dev/null && die "$svc: pid $pid survived SIGKILL"
    log "$svc: killed"
    forget "$svc"
  done
}

cmd_status() {
  local svc pid state ports rc=0 p owner
  for svc in "$@"; do
    ports="$(recorded_ports_of "$svc")"
    if pid="$(running_pid "$svc")"; then
      if healthy "$svc"; then state=healthy; else state="unhealthy: $HEALTH_ERROR" && rc=1; fi
      printf '%-10s running  pid %-7s port(s) %-18s %s\n' "$svc" "$pid" "$ports" "$state"
    else
      rc=1
      state=stopped
      [[ ! -f $RUN/$svc.pid ]] || state="stopped (stale pid file)"
      owner=""
      for p in $(ports_of "$svc"); do
        if ! command -v ss >/dev/null || ! port_in_use "$p"; then continue; fi
        pid="$(listener_pids "$p" | head -n1)"
        if [[ -n $pid ]] && is_ours "$pid" "$svc"; then
          owner="ours, pid $pid, but its pid file is missing: '$0 up' adopts it"
          break
        fi
        owner+="${owner:+, }port $p is held by another process"
      done
      printf '%-10s %s  port(s) %s%s\n' "$svc" "$state" "$(ports_of "$svc")" "${owner:+ ($owner)}"
    fi
  done
  return "$rc"
}

cmd_wait() { wait_healthy 0 "$@"; }

cmd_logs() {
  local follow=0 svc files=() f
  if [[ ${1:-} == -f ]]; then follow=1; shift; fi
  (($#)) || set -- clickhouse kafka
  for svc in "$@"; do
    for f in $(log_files_of "$svc"); do [[ -f $f ]] && files+=("$f"); done
  done
  ((${#files[@]})) || die "no log files yet in $LOG"
  if ((follow)); then exec tail -n "${HOPTRACE_LOG_LINES:-40}" -F "${files[@]}"; fi
  tail -n "${HOPTRACE_LOG_LINES:-40}" "${files[@]}"
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

cmd="${1:-}"
(($#)) && shift
case $cmd in
  up | down | status | wait) ;;
  logs) cmd_logs "$@"; exit ;;
  -h | --help | help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac
(($#)) || set -- clickhouse kafka
for svc in "$@"; do
  [[ $svc == kafka || $svc == clickhouse ]] || die "unknown service: $svc (kafka or clickhouse)"
done
if [[ $cmd == up || $cmd == down ]]; then
  # Two test runs calling `up` at once would both find the ports free and race to bind them.
  mkdir -p "$RUN"
  exec 9>"$RUN/infra.lock"
  flock 9
fi
"cmd_$cmd" "$@"
