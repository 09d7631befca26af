#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what is missing, builds, starts
# the local Kafka and ClickHouse (and stops them again if it started them), then runs
# the unit, integration (real Kafka + ClickHouse) and privileged (real eBPF + netns)
# suites. Ends with a line per failed test ("FAILED file > name: message") and one line
# "tests: N passed, N failed, N skipped".
#   HOPTRACE_ALLOW_SKIP_PRIVILEGED=1  lets the privileged suite skip, loudly, where the kernel lacks a feature.
#   HOPTRACE_SUITES="unit integration" runs only those suites.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
suites=${HOPTRACE_SUITES:-unit integration privileged}

bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }
npm run --silent build || { echo "test: build failed" >&2; exit 1; }

started_infra=0
if [[ $suites == *integration* || $suites == *privileged* ]]; then
  if ! bash deploy/local/infra.sh status 2>/dev/null | grep -q '^kafka *running' || ! bash deploy/local/infra.sh status 2>/dev/null | grep -q '^clickhouse *running'; then
    started_infra=1
  fi
  bash deploy/local/infra.sh up || { echo "test: could not start Kafka and ClickHouse (see above)" >&2; exit 1; }
fi
cleanup() { if (( started_infra )); then bash deploy/local/infra.sh down >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

results=$(mktemp -d)
status=0
for suite in $suites; do
  echo "=== $suite tests ==="
  flags=()
  [[ $suite != unit ]] && flags+=(--no-file-parallelism)
  npx vitest run "test/$suite" "${flags[@]}" --reporter=default --reporter=json --outputFile="$results/$suite.json" || status=1
done

node -e '
  const fs = require("fs");
  let p = 0, f = 0, s = 0; const failed = [];
  for (const file of fs.readdirSync(process.argv[1])) {
    const r = JSON.parse(fs.readFileSync(process.argv[1] + "/" + file, "utf8"));
    p += r.numPassedTests; f += r.numFailedTests + (r.numRuntimeErrorTestSuites ?? 0) ; s += r.numPendingTests + r.numTodoTests;
    // a suite that failed to load reports no tests: count it as a failure
    for (const t of r.testResults) {
      if (t.status === "failed" && t.assertionResults.length === 0) { f++; failed.push(`${t.name}: ${(t.message ?? "").split("\n")[0]}`); }
      for (const a of t.assertionResults) if (a.status === "failed") failed.push(`${t.name.replace(process.cwd() + "/", "")} > ${[...a.ancestorTitles, a.title].join(" > ")}: ${(a.failureMessages[0] ?? "").split("\n")[0].slice(0, 300)}`);
    }
  }
  // repeated last, so a log cut to its tail still says which tests failed and why
  for (const line of failed) console.log(`FAILED ${line}`);
  console.log(`tests: ${p} passed, ${f} failed, ${s} skipped`);
' "$results"
exit $status
