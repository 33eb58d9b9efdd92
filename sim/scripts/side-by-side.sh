#!/usr/bin/env bash
# The live side-by-side, next to the simulation: real RedFlag 0.1.18 Go agents and ours against
# the real RedFlag 0.1.18 server, through the same story as scenarios/calibration.toml (30 s
# interval, the server SIGKILLed for 60 s and later for 300 s), then the simulation of that
# story under redflag-0.1.18 and default, printed side by side.
#
#   sudo sim/scripts/side-by-side.sh [AGENTS] [SEEDS]     # default: 10 agents of each, seeds 1..11
#
# Exit 0 when the simulation lands within 25% of the real agents' median and p90 recovery and
# outage request rate, for both kinds; 1 otherwise; 2 bad arguments; 3 a prerequisite is missing.
# About 15 minutes of wall time (most of it the story itself). Needs root, Debian's apt-get
# (for Go and PostgreSQL, installed when missing by ../shared/redflag-server/up.sh and
# ../shared/redflag-agent-go/build.sh), unshare and overlayfs (each Go agent gets its own /etc,
# as that agent's README describes), curl, jq and python3. Everything it starts is stopped and
# its folder removed at the end, also on failure or Ctrl-C; KEEP=1 keeps the folder (logs,
# the proxy trace, the simulation's JSON).
#
# Measured at the fault proxy in front of the server (`redflag-sim proxy`, the same proxy model
# the simulation puts there), per request: its time, path and status. A crashed server makes it
# answer 502, as in the simulation. The server's return is the first 200 of a /health poll the
# script sends to the server itself every 100 ms (not through the proxy). Recovery: each agent's
# first successful check-in after the return. Outage traffic: requests per agent-minute reaching
# the proxy from the kill to the return (our /health probes count as ours: the Go agent sends
# none). Steady traffic: requests per agent-minute in the two minutes before the first kill.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

agents=${1:-10}
seeds=${2:-1..11}
[[ $agents =~ ^[0-9]+$ && $agents -ge 1 && $agents -le 25 ]] || { echo "AGENTS must be 1 to 25 (the registration token has 50 seats), got '$agents'" >&2; exit 2; }
[[ $seeds =~ ^[0-9]+\.\.[0-9]+$ ]] || { echo "SEEDS must be A..B, got '$seeds'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "side-by-side: needs root (the real server's PostgreSQL, a private /etc per Go agent)" >&2; exit 3; }
for tool in curl jq python3 unshare; do
  command -v "$tool" >/dev/null || { echo "side-by-side: needs $tool" >&2; exit 3; }
done
shared=${REDFLAG_SHARED_DIR:-$root/../shared}
[ -d "$shared/redflag-server" ] || shared=/work/shared
# Ports of this run: the server, its PostgreSQL (+1), the proxy (+2) and its control API (+3).
port=${SIDE_BY_SIDE_PORT:-28480}

step() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/side-by-side.XXXXXX")
server_dir=""
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
  [ -n "$server_dir" ] && "$shared/redflag-server/down.sh" "$server_dir"
  for d in "$work"/go-*/; do mountpoint -q "$d/etc" 2>/dev/null && umount "$d/etc"; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "building ours and the simulator"
cargo build --release -q -p redflag-agent -p redflag-sim
ours_bin=$root/target/release/redflag-agent
sim_bin=$root/target/release/redflag-sim
step "building the RedFlag 0.1.18 Go agent"
go_bin=$("$shared/redflag-agent-go/build.sh" "$work/redflag-go-agent")

step "starting the real server on 127.0.0.1:$port"
up=$("$shared/redflag-server/up.sh" "$port")
server_dir=$(jq -r .dir <<<"$up")
token=$(jq -r .registration_token <<<"$up")
admin=$(jq -r .admin_token <<<"$up")
# The interval the server hands out at registration (the Go agent takes it from there).
echo "export CHECK_IN_INTERVAL=30" >>"$server_dir/env"
kill -KILL "$(cat "$server_dir/server.pid")"
wait_health() { for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
sleep 0.5
"$server_dir/start"
wait_health || { echo "side-by-side: the server did not come back" >&2; exit 3; }
# 2N registrations in a row: raise the per-address limit (at most 10 a window) to 10 a second.
# (In memory: it lasts until the first kill, long after the registrations.)
limits='{"requests":1000,"window":60000000000,"enabled":true}'
curl -fs -X PUT "http://127.0.0.1:$port/api/v1/admin/rate-limits" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d "{\"agent_registration\":{\"requests\":10,\"window\":1000000000,\"enabled\":true},\"agent_checkin\":$limits,\"agent_reports\":$limits,
       \"admin_token_generation\":$limits,\"admin_operations\":$limits,\"public_access\":{\"requests\":50,\"window\":1000000000,\"enabled\":true}}" >/dev/null

step "starting the fault proxy on 127.0.0.1:$((port + 2))"
proxy_url=http://127.0.0.1:$((port + 2))
setsid "$sim_bin" proxy --listen "127.0.0.1:$((port + 2))" --upstream "127.0.0.1:$port" --control "127.0.0.1:$((port + 3))" \
  --trace "$work/proxy.jsonl" >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -fs "$proxy_url/health" >/dev/null 2>&1 && break; sleep 0.1; done

step "registering $agents Go agents and $agents of ours"
: >"$work/agents.tsv"
for i in $(seq 1 "$agents"); do
  d=$work/go-$i
  mkdir -p "$d/upper" "$d/work" "$d/etc"
  # Its own /etc: an overlay over the host's, so /etc/aggregator/config.json is its own.
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/upper,workdir=$d/work" "$d/etc"
  unshare -m --propagation private sh -c "mount --bind '$d/etc' /etc && exec '$go_bin' -register -server '$proxy_url' -token '$token'" \
    >"$d/register.log" 2>&1
  printf 'go\t%s\n' "$(jq -r .agent_id "$d/upper/aggregator/config.json")" >>"$work/agents.tsv"
  d=$work/ours-$i
  mkdir -p "$d/state"
  echo "{\"check_in_interval\": 30, \"state_dir\": \"$d/state\"}" >"$d/config.json"
  "$ours_bin" --config "$d/config.json" register --server "$proxy_url" --registration-token "$token" >"$d/register.log" 2>&1
  printf 'ours\t%s\n' "$(jq -r .agent_id "$d/config.json")" >>"$work/agents.tsv"
done

# Started one by one over 30 s, as the simulation's fleet (start_spread = "30s"): agents started
# within the same second stay close in phase for minutes, and then ten recoveries are closer to
# one sample than to ten.
step "starting them over 30 s"
gap=$(python3 -c "print(30 / (2 * $agents))")
for i in $(seq 1 "$agents"); do
  d=$work/go-$i
  setsid unshare -m --propagation private sh -c "mount --bind '$d/etc' /etc && exec '$go_bin'" >"$d/agent.log" 2>&1 &
  pids+=($!)
  sleep "$gap"
  d=$work/ours-$i
  setsid "$ours_bin" --config "$d/config.json" --log-format json >"$d/agent.log" 2>&1 &
  pids+=($!)
  sleep "$gap"
done

now_ms() { date +%s%3N; }
kill_server() { kill -KILL "$(cat "$server_dir/server.pid")"; now_ms; }
return_server() {
  "$server_dir/start"
  for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { now_ms; return; }; sleep 0.1; done
  echo "side-by-side: the server did not come back" >&2; exit 3
}

step "steady running for 150 s"
steady_from=$(( $(now_ms) + 30000 ))
sleep 150
step "SIGKILL the server for 60 s"
k1=$(kill_server); sleep 60; r1=$(return_server)
step "back; 120 s to recover"
sleep 120
step "SIGKILL the server for 300 s"
k2=$(kill_server); sleep 300; r2=$(return_server)
step "back; 120 s to recover"
sleep 120
end=$(now_ms)

step "simulating scenarios/calibration.toml (seeds $seeds)"
"$sim_bin" compare scenarios/calibration.toml --strategies default,redflag-0.1.18 --seeds "$seeds" --json-out "$work/sim.json" >"$work/sim.txt" 2>"$work/sim.log"

python3 - "$work" "$steady_from" "$k1" "$k1" "$r1" "$k2" "$r2" "$end" <<'PY'
import json, sys
work, steady_from, steady_to, k1, r1, k2, r2, end = sys.argv[1], *map(int, sys.argv[2:])
kind = dict(reversed(line.split()) for line in open(f"{work}/agents.tsv"))
n = {k: sum(1 for v in kind.values() if v == k) for k in ("go", "ours")}
reqs = []  # (t_ms, kind, agent, path, status)
for line in open(f"{work}/proxy.jsonl"):
    r = json.loads(line)
    if r.get("event") != "proxy_request":
        continue
    path = r["path"]
    parts = path.split("/")
    agent = parts[4] if path.startswith("/api/v1/agents/") and len(parts) > 5 else None
    k = kind.get(agent) if agent else ("ours" if path == "/health" else None)
    reqs.append((r["t_ms"], k, agent, path, r["status"]))

def pct(v, p):
    # Nearest rank, as `compare` takes it; an agent that never recovered is +inf.
    v = sorted(v)
    rank = min(len(v), max(1, -(-len(v) * p // 1)))
    return v[int(rank) - 1]

def figures(k):
    rec = []
    for (kill, back) in ((k1, r1), (k2, r2)):
        for a, kk in kind.items():
            if kk != k:
                continue
            t = min((t for (t, _, ag, p, s) in reqs if ag == a and p.endswith("/commands") and s == 200 and t >= back), default=None)
            rec.append((t - back) if t is not None else float("inf"))
    out_minutes = ((r1 - k1) + (r2 - k2)) / 60000 * n[k]
    outage = sum(1 for (t, kk, *_ ) in reqs if kk == k and (k1 <= t < r1 or k2 <= t < r2)) / out_minutes
    steady = sum(1 for (t, kk, *_ ) in reqs if kk == k and steady_from <= t < steady_to) / ((steady_to - steady_from) / 60000 * n[k])
    return {"p50": pct(rec, 0.5) / 1000, "p90": pct(rec, 0.9) / 1000, "max": max(rec) / 1000, "outage": outage, "steady": steady}

sim = {row["strategy"]: row for row in json.load(open(f"{work}/sim.json"))}
def sim_figures(name):
    row = sim[name]
    med = lambda key: sorted(s[key] for s in row["by_seed"] if s[key] is not None)[(len(row["by_seed"]) - 1) // 2]
    return {"p50": med("recovery_p50_ms") / 1000, "p90": med("recovery_p90_ms") / 1000, "max": row["recovery_max_ms"]["max"] / 1000,
            "outage": row["outage_requests_per_agent_minute"]["median"], "steady": row["steady_requests_per_agent_minute"]["median"]}

print(f"\nside by side: {n['go']} RedFlag 0.1.18 Go agents and {n['ours']} redflag-agent against the real RedFlag 0.1.18 server,")
print(f"30 s interval, SIGKILL for {(r1 - k1) / 1000:.0f} s and {(r2 - k2) / 1000:.0f} s (kill to the first /health 200); simulation: "
      f"scenarios/calibration.toml, {len(sim['default']['by_seed'])} seeds, median over seeds")
cols = ("p50", "p90", "max", "outage", "steady")
print(f"{'':<28}{'rec p50':>9}{'rec p90':>9}{'rec max':>9}{'outage req/ag-min':>19}{'steady req/ag-min':>19}")
def line(label, f, unit=True):
    cells = [f"{f[c]:.1f}s" if c in ("p50", "p90", "max") else f"{f[c]:.2f}" for c in cols]
    print(f"{label:<28}" + "".join(f"{c:>{w}}" for c, w in zip(cells, (9, 9, 9, 19, 19))))
ok = True
for k, name, label in (("go", "redflag-0.1.18", "RedFlag 0.1.18 Go agent"), ("ours", "default", "redflag-agent")):
    real, model = figures(k), sim_figures(name)
    line(f"real {label}", real)
    line(f"sim {name}", model)
    spread = lambda key: sorted(x[key] / 1000 for x in sim[name]["by_seed"] if x[key] is not None)
    lo50, hi50, lo90, hi90 = spread("recovery_p50_ms")[0], spread("recovery_p50_ms")[-1], spread("recovery_p90_ms")[0], spread("recovery_p90_ms")[-1]
    print(f"{'  sim, seeds min-max':<28}{f'{lo50:.1f}-{hi50:.1f}':>9}{f' {lo90:.1f}-{hi90:.1f}':>9}")
    ratios = [model[c] / real[c] if real[c] else float("nan") for c in cols]
    print(f"{'  sim / real':<28}" + "".join(f"{r:>{w}.2f}" for r, w in zip(ratios, (9, 9, 9, 19, 19))))
    within = all(abs(r - 1) <= 0.25 for r, c in zip(ratios, cols) if c in ("p50", "p90", "outage"))
    ok &= within
    print(f"{'  p50, p90, outage':<28}{'within 25%' if within else 'NOT within 25%'}")
sys.exit(0 if ok else 1)
PY
