#!/usr/bin/env bash
# Prepares a machine for hoptrace: Debian packages, node_modules, Apache Kafka broker jars.
#
# Every step checks first and does nothing when it is already done, so this is safe to run at
# any time (CI runs it on every build). It expects Debian 12 with Node 20, npm, Java 17 and
# Maven present, and root for the apt step (only when a package is actually missing).
#
# Usage: scripts/setup.sh [--build]
#   --build   also run `npm run build` (protobuf codegen + tsc) at the end. Off by default so
#             that setting up a machine never depends on the code compiling.
# Env:
#   HOPTRACE_VAR   state root shared with deploy/local/infra.sh (default: <repo>/var);
#                  the Kafka jars go to $HOPTRACE_VAR/kafka/libs.
set -euo pipefail

# Everything the project needs from Debian: ClickHouse (the store), the eBPF toolchain,
# netns/iptables/conntrack tooling for the lab and privileged tests, scapy to inject segments.
DEBIAN_PACKAGES=(clickhouse-server clickhouse-client clang llvm libbpf-dev bpftool liblz4-1 iproute2 iptables conntrack python3-scapy curl)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VAR="${HOPTRACE_VAR:-$REPO/var}"
KAFKA_POM="$REPO/deploy/local/kafka/pom.xml"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

build=0
for arg in "$@"; do
  case "$arg" in
    --build) build=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (usage: scripts/setup.sh [--build])" ;;
  esac
done

debian_packages() {
  local p missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    # `dpkg -s` alone also succeeds for removed packages whose config files remain.
    dpkg -s "$p" 2>/dev/null | grep -qx 'Status: install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "debian packages present"
    return
  fi
  [[ $EUID -eq 0 ]] || die "missing debian packages (${missing[*]}); run this script as root"
  log "installing debian packages: ${missing[*]}"
  # The package lists may be stale or absent on a fresh machine; only refresh when installing.
  apt-get update -q >&2
  # No recommends: scapy and clang would otherwise pull in hundreds of MB we never use.
  # clickhouse-server's postinst may start the system service on Debian's default ports; our
  # instance (deploy/local/infra.sh) uses its own ports, config and data, so it can coexist.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# koffi, the codecs (prebuilt napi-rs binaries) and vitest (via esbuild) are the dependencies
# with native parts; prove they load rather than trust that their install scripts ran.
node_natives_work() {
  (cd "$REPO" &&
    node -e "require('koffi')" &&
    node -e "require('koffi').load('liblz4.so.1'); require('snappy').compressSync(Buffer.from('x'))" &&
    node -e "require('esbuild').transformSync('let a: number = 1', { loader: 'ts' })" &&
    npx --no vitest --version) >/dev/null 2>&1
}

npm_packages() {
  cd "$REPO"
  # npm ci writes node_modules/.package-lock.json last, so a lock file newer than it means the
  # dependencies changed since the last install.
  if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
    log "installing npm packages (npm ci)"
    npm ci --no-audit --no-fund >&2
  else
    log "npm packages present"
  fi
  # npm 11 reports dependency install scripts not approved in package.json's "allowScripts"
  # (here koffi and esbuild), and its docs announce that a later release will skip them. Neither
  # needs its script on this platform (checked with `npm ci --ignore-scripts`): koffi 3 loads
  # its prebuilt binary from the optional package @koromix/koffi-<platform>, and esbuild's
  # postinstall only swaps its JS launcher for the native binary from @esbuild/<platform>.
  # Should that change, `npm rebuild <pkg>` runs a package's install scripts on explicit request.
  if ! node_natives_work; then
    log "koffi/esbuild do not load; running their install scripts (npm rebuild koffi esbuild)"
    npm rebuild koffi esbuild >&2
    node_natives_work || die "koffi or esbuild still fail to load after npm rebuild; try: node -e \"require('koffi')\"; npx --no vitest --version"
  fi
}

kafka_jars() {
  local libs="$VAR/kafka/libs" stamp want tmp
  stamp="$libs/.pom.sha256"
  # Keyed on the pom's content, so changing the Kafka version fetches the jars again.
  want="$(sha256sum <"$KAFKA_POM" | cut -d' ' -f1)"
  if [[ -f $stamp && "$(<"$stamp")" == "$want" ]]; then
    log "kafka jars present"
    return
  fi
  # Swapping jars under a running JVM breaks its lazy class loading.
  if [[ -f $VAR/run/kafka.pid ]] && kill -0 "$(<"$VAR/run/kafka.pid")" 2>/dev/null; then
    die "kafka jars must be (re)fetched but kafka is running; stop it first: deploy/local/infra.sh down kafka"
  fi
  log "fetching kafka broker jars into $libs (maven)"
  mkdir -p "$VAR/kafka"
  tmp="$VAR/kafka/libs.tmp.$$"
  rm -rf "$tmp"
  # Fetch to a temporary directory and rename, so an interrupted download never looks complete.
  # Maven's output goes to a file: with -q it is only stray ANSI codes unless something fails.
  mkdir -p "$VAR/log"
  if ! (cd "$REPO/deploy/local/kafka" &&
    mvn -q -B -f pom.xml dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime) \
    >"$VAR/log/setup-maven.log" 2>&1; then
    tail -n 30 "$VAR/log/setup-maven.log" >&2
    die "maven failed to fetch the kafka jars; full output in $VAR/log/setup-maven.log"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "maven finished but no kafka_2.13 jar is in $tmp"
  rm -rf "$libs"
  mv "$tmp" "$libs"
  printf '%s\n' "$want" >"$stamp"
  log "kafka jars fetched ($(du -sh "$libs" | cut -f1))"
}

debian_packages
npm_packages
kafka_jars
if ((build)); then
  log "building (npm run build)"
  (cd "$REPO" && npm run build >&2)
fi
log "done"
