#!/usr/bin/env bash
# The speed workloads of issue 18, as repeated timed runs of the release binary: wall time, CPU
# time (user + system) and peak memory (max RSS) of each run, and the median of each.
#
#   sim/scripts/speed.sh [--runs N] [--bin PATH] [WORKLOAD...]
#
# WORKLOAD (default: fleet-10k fleet-100k explore-300 sweep-200):
#   fleet-10k     10,000 agents x 1 simulated hour, a 500/s server that restarts once
#                 (benches/workloads/fleet-10k-1h-restart.toml)
#   fleet-100k    100,000 agents x 10 simulated minutes, a 2,000/s server that crashes once
#                 (benches/workloads/fleet-100k-10m-crash.toml)
#   fleet-1m      1,000,000 agents x 10 simulated minutes (scenarios/soak/million-agents.toml)
#   explore-300   explore scenarios/explore/default-agent.toml, 300 schedules, 2 jobs
#   explore-10000 the same, 10,000 schedules
#   sweep-200     sweep scenarios/commands-through-504.toml, 200 seeds, 2 jobs
#   sweep-2000    the same, 2,000 seeds
#
# Each `run` writes its trace (as `redflag-sim run` always does) to a temporary folder that is
# removed at the end. `--runs` (default 3) repeats each workload; `--bin` times another build
# of redflag-sim (default: target/release/redflag-sim, built first). The load average before
# and after each workload is printed: the machine may be shared, and wall time counts the
# moments another process had the core, CPU time does not. Nothing here asserts on time.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

runs=3
bin=
workloads=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) [ $# -ge 2 ] || usage; runs=$2; shift 2 ;;
    --bin) [ $# -ge 2 ] || usage; bin=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) workloads+=("$1"); shift ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "--runs must be a whole number of at least 1, got '$runs'" >&2; exit 2; }
[ ${#workloads[@]} -gt 0 ] || workloads=(fleet-10k fleet-100k explore-300 sweep-200)
if [ -z "$bin" ]; then
  cargo build --release -q -p redflag-sim
  bin=target/release/redflag-sim
fi
[ -x "$bin" ] || { echo "no executable at $bin" >&2; exit 2; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

command_of() {
  case "$1" in
    fleet-10k) echo run benches/workloads/fleet-10k-1h-restart.toml --trace "$scratch/trace.jsonl" ;;
    fleet-100k) echo run benches/workloads/fleet-100k-10m-crash.toml --trace "$scratch/trace.jsonl" ;;
    fleet-1m) echo run scenarios/soak/million-agents.toml --trace "$scratch/trace.jsonl" ;;
    explore-*) echo explore scenarios/explore/default-agent.toml --runs "${1#explore-}" --jobs 2 --keep-going \
                 --shrink-runs-max 1 --out "$scratch/shrunk.toml" ;;
    sweep-*) echo sweep scenarios/commands-through-504.toml --seeds "1..$((${1#sweep-} + 1))" --jobs 2 ;;
    *) return 1 ;;
  esac
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "binary: $bin ($(stat -c %y "$bin" | cut -d. -f1)); $(nproc) cores; runs per workload: $runs"
for w in "${workloads[@]}"; do
  cmd=$(command_of "$w") || { echo "unknown workload '$w'" >&2; usage; }
  echo "== $w: redflag-sim $cmd"
  echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  : > "$scratch/times"
  for ((i = 1; i <= runs; i++)); do
    # shellcheck disable=SC2086 # the command is split into words on purpose
    /usr/bin/time -f '%e %U %S %M' -o "$scratch/time" "$bin" $cmd > "$scratch/out" 2>&1 || code=$?
    code=${code:-0}
    # 0 every run passed, 1 an expectation failed (explore finds failures on purpose): both ran.
    if [ "$code" -gt 1 ]; then echo "   run $i: exit $code" >&2; tail -5 "$scratch/out" >&2; exit 1; fi
    unset code
    read -r wall user sys rss_kb < <(tail -1 "$scratch/time")
    cpu=$(echo "$user + $sys" | bc)
    rss_mb=$((rss_kb / 1024))
    extra=$(grep -oE '[0-9]+ runs? \(.*\) on [0-9]+ threads? in [0-9.]+s|^[0-9]+ run\(s\) in [0-9.]+s' "$scratch/out" | head -1 || true)
    printf '   run %d: wall %6.2f s  cpu %7.2f s  max rss %6d MB  %s\n' "$i" "$wall" "$cpu" "$rss_mb" "$extra"
    echo "$wall $cpu $rss_mb" >> "$scratch/times"
  done
  printf '   median: wall %s s  cpu %s s  max rss %s MB\n' \
    "$(cut -d' ' -f1 "$scratch/times" | median)" "$(cut -d' ' -f2 "$scratch/times" | median)" "$(cut -d' ' -f3 "$scratch/times" | median)"
  echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
