#!/usr/bin/env bash
# Webhook delivery benchmark. Builds release binaries, then:
#   1. baseline: emit N events with no webhooks and no worker (emit cost);
#   2. up: 3 loopback receivers registered for `*`, `webhooks run` in the background, N events emitted
#      at RATE/s; checks that all 3N deliveries arrive (unique webhook-ids) and reports the delivery
#      delay (receiver clock minus the event's ts) percentiles; p50 must be <= 50 ms;
#   3. down: the same 3 registrations pointing at closed ports, the worker retrying them
#      (disable_after_failures 0), N events emitted as fast as possible: the emit cost must not change.
# Emit costs are the best of 3 runs (the machine may be shared). Prints ratios against the baseline
# measured in the same run. Env: N (10000), RATE (2000).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RATE=${RATE:-2000}

cargo build --release --quiet --bin comfyvn-obs --example webhook_receiver --example hook_emitter
BIN=$PWD/target/release/comfyvn-obs
EX=$PWD/target/release/examples
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

obs() { COMFYVN_RUNTIME_ROOT="$1" "$BIN" "${@:2}"; }
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
config() { # root, disable_after
  mkdir -p "$1/config"
  printf '{"obs": {"webhooks": {"disable_after_failures": %s}}}\n' "$2" > "$1/config/comfyvn.json"
}

echo "webhook benchmark: N=$N events, 3 receivers, paced at $RATE events/s for the delay run"

best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }

# 1. Baseline emit cost.
runs=()
for i in 1 2 3; do
  config "$work/base$i" 10
  "$EX/hook_emitter" --root "$work/base$i" --count "$N" > "$work/base$i.json"
  runs+=("$(json "$work/base$i.json" "['emit_us_mean']")")
done
base_us=$(best "${runs[@]}")
echo "baseline emit (no webhooks, no worker): ${base_us} us/event (runs: ${runs[*]})"

# 2. Receivers up.
"$EX/webhook_receiver" --receivers 3 --expect $((3 * N)) --ports-file "$work/ports" --timeout-s 120 > "$work/recv.json" &
recv=$!
pids+=("$recv")
for _ in $(seq 100); do [ -s "$work/ports" ] && break; sleep 0.05; done
config "$work/up" 10
for port in $(cat "$work/ports"); do
  obs "$work/up" webhooks add --event '*' --url "http://127.0.0.1:$port/hook" --secret "whsec_$(head -c 24 /dev/urandom | base64)" > /dev/null
done
COMFYVN_RUNTIME_ROOT="$work/up" "$BIN" webhooks run > /dev/null 2>&1 &
worker=$!
pids+=("$worker")
sleep 0.3
"$EX/hook_emitter" --root "$work/up" --count "$N" --rate "$RATE" > "$work/up.json"
wait "$recv" || true
kill -TERM "$worker" 2>/dev/null || true
wait "$worker" 2>/dev/null || true
received=$(json "$work/recv.json" "['received']")
unique=$(json "$work/recv.json" "['unique_ids']")
p50=$(json "$work/recv.json" "['p50_ms']")
echo "delivered: $received requests, $unique unique webhook-ids (expected $((3 * N)))," \
  "per receiver $(json "$work/recv.json" "['per_receiver']")"
echo "delivery delay: p50 ${p50} ms, p95 $(json "$work/recv.json" "['p95_ms']") ms," \
  "p99 $(json "$work/recv.json" "['p99_ms']") ms, max $(json "$work/recv.json" "['max_ms']") ms"
up_us=$(json "$work/up.json" "['emit_us_mean']")

# 3. Receivers down, worker retrying.
config "$work/down" 0
for port in $(python3 -c 'import socket
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'); do
  obs "$work/down" webhooks add --event '*' --url "http://127.0.0.1:$port/hook" > /dev/null
done
COMFYVN_RUNTIME_ROOT="$work/down" "$BIN" webhooks run > /dev/null 2>&1 &
worker=$!
pids+=("$worker")
sleep 0.3
runs=()
for i in 1 2 3; do
  "$EX/hook_emitter" --root "$work/down" --count "$N" > "$work/down$i.json"
  runs+=("$(json "$work/down$i.json" "['emit_us_mean']")")
done
kill -TERM "$worker" 2>/dev/null || true
wait "$worker" 2>/dev/null || true
down_us=$(best "${runs[@]}")
attempts=$(wc -l < "$work/down/data/webhooks/deliveries.jsonl" || echo 0)
echo "emit with receivers down, worker retrying: ${down_us} us/event (runs: ${runs[*]};" \
  "$attempts failed attempts logged meanwhile)"

python3 - "$base_us" "$up_us" "$down_us" "$received" "$unique" "$p50" "$N" <<'PY'
import sys
base, up, down, received, unique, p50, n = (float(x) for x in sys.argv[1:])
print(f"ratio emit cost (paced, while delivering) / baseline: {up / base:.2f}  (CPU shared with the worker)")
print(f"ratio emit cost (receivers down)         / baseline: {down / base:.2f}")
print(f"ratio p50 delivery delay / 50 ms target:   {p50 / 50:.2f}")
ok = unique == 3 * n and p50 <= 50
print("PASS" if ok else "FAIL", f"(all delivered: {unique == 3 * n}, p50 <= 50 ms: {p50 <= 50})")
sys.exit(0 if ok else 1)
PY
