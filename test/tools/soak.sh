#!/usr/bin/env bash
# Soak: run the whole test suite K times in a row, optionally while a bounded CPU burner keeps every
# core busy, and print how many runs passed and which tests failed (with how often). Used to find
# tests that depend on timing (issue 7); not part of `npm test` or CI.
#
#   test/tools/soak.sh [-k K] [-l] [-b BURNERS] [-o LOGDIR] [-- bun test arguments...]
#
#   -k K        runs (default 10)
#   -l          load: start BURNERS busy loops (default: one per core) for the whole soak
#   -b N        number of busy loops with -l
#   -o DIR      keep each run's output in DIR/run-<i>.log (default: a fresh directory under /tmp)
#   -T SECONDS  watchdog per run (default 1800): a hung run is killed and counted as failed
#   after --     passed to `bun test` (e.g. a file: -- test/striped.test.ts)
#
# The burners cannot outlive the soak: each checks every few milliseconds that the soak's shell is still
# alive and stops when it is not (even after a kill -9), each runs under `timeout` (K runs of the
# watchdog at most), and an EXIT trap kills them by pid as soon as the soak ends or is interrupted.
# Exit status: 0 when every run passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."

runs=10
load=0
burners=$(nproc 2>/dev/null || echo 2)
logdir=""
watchdog=1800
while getopts "k:lb:o:T:" opt; do
  case "$opt" in
    k) runs=$OPTARG ;;
    l) load=1 ;;
    b) burners=$OPTARG ;;
    o) logdir=$OPTARG ;;
    T) watchdog=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -n "$logdir" ] || logdir=$(mktemp -d /tmp/soak.XXXXXX)
mkdir -p "$logdir"

bun=node_modules/.bin/bun
tsc=node_modules/.bin/tsc
[ -x "$bun" ] || { echo "soak: $bun not found; run npm install first" >&2; exit 2; }

burner_pids=()
stop_burners() {
  for pid in "${burner_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${burner_pids[@]}"; do wait "$pid" 2>/dev/null; done
  burner_pids=()
}
trap stop_burners EXIT
trap 'exit 130' INT TERM

# The type check does not depend on timing: once is enough.
if [ -x "$tsc" ] && ! "$tsc" --noEmit -p .; then
  echo "soak: type check failed" >&2
  exit 1
fi

if [ "$load" = 1 ]; then
  limit=$((runs * watchdog))
  for _ in $(seq "$burners"); do
    timeout "$limit" sh -c 'while kill -0 "$1" 2>/dev/null; do i=0; while [ $i -lt 20000 ]; do i=$((i + 1)); done; done' burner $$ &
    burner_pids+=($!)
  done
  echo "soak: $burners CPU burners started (pids ${burner_pids[*]}, stop by themselves after ${limit}s)"
fi

pass=0
fail=0
: >"$logdir/failures.txt"
for i in $(seq "$runs"); do
  log="$logdir/run-$i.log"
  start=$(date +%s)
  timeout -k 10 "$watchdog" "$bun" test --timeout 120000 "$@" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  # "(fail) describe > name [ms]", listed again in bun's summary (hence sort -u); errors outside any
  # test are reported as unhandled.
  failed=$(grep -E '^\(fail\)' "$log" | sed -E 's/^\(fail\) //; s/ \[[0-9.]+m?s\]$//' | sort -u)
  if grep -qE 'Unhandled error|error between tests' "$log"; then
    failed=$(printf '%s\n%s' "$failed" "(unhandled error outside a test; see $log)")
  fi
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && failed=$(printf '%s\n%s' "$failed" "(run killed by the ${watchdog}s watchdog)")
  summary=$(grep -E '^ *[0-9]+ (pass|fail)$' "$log" | tr -s ' \n' ' ')
  if [ "$rc" = 0 ] && [ -z "$(echo "$failed" | tr -d '[:space:]')" ]; then
    pass=$((pass + 1))
    echo "run $i: pass ($summary; ${secs}s)"
  else
    fail=$((fail + 1))
    echo "run $i: FAIL rc=$rc ($summary; ${secs}s) log $log"
    echo "$failed" | grep -v '^$' | sed 's/^/    /'
    echo "$failed" | grep -v '^$' | sed "s/^/run $i: /" >>"$logdir/failures.txt"
  fi
done

stop_burners
echo "soak: $runs runs$([ "$load" = 1 ] && echo " under load ($burners burners)"): $pass passed, $fail failed; logs in $logdir"
if [ -s "$logdir/failures.txt" ]; then
  echo "failing tests (times failed):"
  sed -E 's/^run [0-9]+: //' "$logdir/failures.txt" | sort | uniq -c | sort -rn
fi
[ "$fail" = 0 ]
