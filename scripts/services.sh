#!/usr/bin/env bash
# Starts/stops hoptrace's own long-running services (correlator, API) in the background,
# with pid files in var/run and logs in var/log. Like infra.sh, it only ever signals
# processes it started.
#   scripts/services.sh start|stop|status [correlator|api ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
var=${HOPTRACE_VAR:-$root/var}
mkdir -p "$var/run" "$var/log"
action=${1:-status}
shift || true
names=("${@:-correlator api}")
read -r -a names <<<"${names[*]}"

pid_of() {
  local f="$var/run/$1.pid" pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  # Only a pid whose command line is our CLI running this service counts as ours.
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "dist/services/cli/main.js $1"; then
    echo "$pid"
    return 0
  fi
  rm -f "$f"
  return 1
}

for name in "${names[@]}"; do
  case $action in
    start)
      if pid=$(pid_of "$name"); then
        echo "$name: already running (pid $pid)"
        continue
      fi
      nohup node --enable-source-maps "$root/dist/services/cli/main.js" "$name" >>"$var/log/$name.log" 2>&1 &
      pid=$!
      echo $pid >"$var/run/$name.pid"
      # A service that cannot start (port taken, bad option) exits at once: say so, with its last words.
      sleep 1
      if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$var/run/$name.pid"
        echo "$name: failed to start; end of $var/log/$name.log:" >&2
        tail -n 5 "$var/log/$name.log" >&2
        exit 1
      fi
      echo "$name: started (pid $pid, log $var/log/$name.log)"
      ;;
    stop)
      if pid=$(pid_of "$name"); then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        rm -f "$var/run/$name.pid"
        echo "$name: stopped"
      else
        echo "$name: not running"
      fi
      ;;
    status)
      if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
      ;;
    *)
      echo "usage: $0 start|stop|status [correlator|api ...]" >&2
      exit 2
      ;;
  esac
done
