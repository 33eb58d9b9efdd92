#!/usr/bin/env bash
# Trace equality for refactors and speed work: the same scenario and seed must give the same
# trace bytes before and after a change that claims to change no behaviour.
#
#   sim/scripts/traces.sh record DIR [SEEDS]     # writes DIR/<scenario>-seed-<n>.jsonl and DIR/SHA256SUMS
#   sim/scripts/traces.sh compare DIR_A DIR_B    # exit 0 when every trace is byte-identical
#
# SEEDS is a range A..B (B excluded; default 1..21, i.e. seeds 1 to 20). Every non-live
# scenario is recorded: scenarios/*.toml except live-*, plus scenarios/explore/ and
# scenarios/soak/, but not a file with a line starting `# traces.sh: skip` (the million-agent
# soak: minutes and gigabytes per seed). Runs use the release binary (built first) and every
# core. A run's verdict does not matter here (expect_failure scenarios fail on purpose), only
# its trace.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

scenario_files() {
  for f in scenarios/*.toml scenarios/explore/*.toml scenarios/soak/*.toml; do
    case "$(basename "$f")" in live-*) continue ;; esac
    grep -q '^# traces.sh: skip' "$f" && continue
    echo "$f"
  done
}

record() {
  local dir=$1 seeds=${2:-1..21}
  local a=${seeds%%..*} b=${seeds##*..}
  [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ && $a -lt $b ]] || { echo "SEEDS must be A..B with A < B, got '$seeds'" >&2; exit 2; }
  cargo build --release -q -p redflag-sim
  mkdir -p "$dir"
  local bin=target/release/redflag-sim
  local jobs; jobs=$(nproc 2>/dev/null || echo 2)
  scenario_files | while read -r f; do
    for ((s = a; s < b; s++)); do echo "$f $s"; done
  done | xargs -P "$jobs" -n 2 sh -c '
    name=$(basename "$1" .toml)
    out="$0/$name-seed-$2.jsonl"
    "'"$bin"'" run "$1" --seed "$2" --trace "$out" >/dev/null 2>&1
    code=$?
    # 0 pass, 1 an expectation failed: both leave a trace. Anything else is a harness problem.
    if [ "$code" -gt 1 ] || [ ! -s "$out" ]; then echo "run $1 --seed $2: exit $code, no trace" >&2; exit 255; fi
  ' "$dir"
  (cd "$dir" && sha256sum -- *.jsonl | sort -k2 > SHA256SUMS)
  echo "recorded $(wc -l < "$dir/SHA256SUMS") traces in $dir"
}

compare() {
  local a=$1/SHA256SUMS b=$2/SHA256SUMS
  [ -f "$a" ] && [ -f "$b" ] || { echo "both folders need a SHA256SUMS (run 'record' first)" >&2; exit 2; }
  if diff -q "$a" "$b" >/dev/null; then
    echo "identical: $(wc -l < "$a") traces"
    return 0
  fi
  echo "traces differ:" >&2
  diff "$a" "$b" | sed -n 's/^[<>] [0-9a-f]*  //p' | sort -u | head -50 >&2
  local first; first=$(diff "$a" "$b" | sed -n 's/^[<>] [0-9a-f]*  //p' | head -1)
  if [ -n "$first" ] && [ -f "$1/$first" ] && [ -f "$2/$first" ]; then
    echo "first difference in $first:" >&2
    cmp "$1/$first" "$2/$first" >&2 || true
    diff <(cat "$1/$first") <(cat "$2/$first") | head -10 >&2 || true
  fi
  return 1
}

case "${1:-}" in
  record) [ $# -ge 2 ] || usage; record "$2" "${3:-}" ;;
  compare) [ $# -eq 3 ] || usage; compare "$2" "$3" ;;
  *) usage ;;
esac
