#!/usr/bin/env bash
# OTLP export benchmark against the rotel collector (from its PyPI wheel, exporting to its blackhole).
# Builds release binaries, then:
#   1. baseline: emit N events with no exporter (emit cost, best of 3);
#   2. throughput: `export run --once` of those N events to the collector on loopback (wall time,
#      best of 3 fresh checkpoints), as events/s against the 20,000 events/s target;
#   3. delay: `export run` with the default batch settings while N events are emitted at RATE/s, to a
#      loopback receiver decoding with the official `opentelemetry-proto` package
#      (benches/otlp_receiver.py): the median delay from an event's time to its arrival (target <= 1 s);
#   4. down: `export run` retrying against a closed port while N events are emitted (best of 3): the
#      emit cost must not change.
# Prints ratios against the baseline measured in the same run. Env: N (10000), E2E_VENV (the venv
# holding rotel, default /tmp/comfyvn-e2e-venv; created when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RATE=${RATE:-2000}
venv="${E2E_VENV:-/tmp/comfyvn-e2e-venv}"

cargo build --release --quiet --bin comfyvn-obs --example hook_emitter
BIN=$PWD/target/release/comfyvn-obs
EX=$PWD/target/release/examples
if ! "$venv/bin/python" -c 'import rotel, opentelemetry.proto' 2>/dev/null; then
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "rotel==0.0.1a15" "opentelemetry-proto==1.45.2"
fi
rotel_bin="$("$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "OTLP benchmark: N=$N hook events"

# 1. Baseline emit cost.
runs=()
for i in 1 2 3; do
  "$EX/hook_emitter" --root "$work/base$i" --count "$N" > "$work/base$i.json"
  runs+=("$(json "$work/base$i.json" "['emit_us_mean']")")
done
base_us=$(best "${runs[@]}")
echo "baseline emit (no exporter): ${base_us} us/event (runs: ${runs[*]})"

# 2. Export throughput to rotel on loopback.
http_port=$(free_port)
grpc_port=$(free_port)
"$rotel_bin" start --otlp-http-endpoint "127.0.0.1:$http_port" --otlp-grpc-endpoint "127.0.0.1:$grpc_port" \
  --exporter blackhole --log-file "$work/rotel-agent.log" > "$work/rotel.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$http_port") 2>/dev/null && break; sleep 0.1; done
secs=()
for i in 1 2 3; do
  rm -rf "$work/base1/data/otlp"
  start=$(date +%s.%N)
  COMFYVN_RUNTIME_ROOT="$work/base1" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$http_port" \
    "$BIN" export run --once 2> /dev/null
  end=$(date +%s.%N)
  secs+=("$(python3 -c "print($end - $start)")")
  exported=$(json "$work/base1/data/otlp/status.json" "['exported']")
  [[ "$exported" == "$N" ]] || { echo "FAIL: exported $exported of $N"; exit 1; }
done
best_s=$(best "${secs[@]}")
echo "export of $N events to rotel: ${best_s} s (runs: ${secs[*]})"

# 3. Emit-to-collector delay with the default batch settings.
"$venv/bin/python" benches/otlp_receiver.py "$work/recv-port" "$N" 120 > "$work/recv.json" &
recv=$!
pids+=("$recv")
for _ in $(seq 100); do [ -s "$work/recv-port" ] && break; sleep 0.05; done
mkdir -p "$work/delay/config"
printf '{"obs": {"otlp": {"endpoint": "http://127.0.0.1:%s"}}}\n' "$(cat "$work/recv-port")" > "$work/delay/config/comfyvn.json"
COMFYVN_RUNTIME_ROOT="$work/delay" "$BIN" export run > /dev/null 2>&1 &
exporter=$!
pids+=("$exporter")
sleep 0.3
"$EX/hook_emitter" --root "$work/delay" --count "$N" --rate "$RATE" > /dev/null
wait "$recv" || true
kill -TERM "$exporter" 2>/dev/null || true
wait "$exporter" 2>/dev/null || true
p50=$(json "$work/recv.json" "['p50_ms']")
echo "emit-to-collector delay at $RATE events/s: p50 ${p50} ms, p95 $(json "$work/recv.json" "['p95_ms']") ms," \
  "max $(json "$work/recv.json" "['max_ms']") ms ($(json "$work/recv.json" "['unique_seqs']") of $N records)"

# 4. Emit cost with the collector down and the exporter retrying.
closed=$(free_port)
mkdir -p "$work/down/config"
printf '{"obs": {"otlp": {"endpoint": "http://127.0.0.1:%s"}}}\n' "$closed" > "$work/down/config/comfyvn.json"
"$EX/hook_emitter" --root "$work/down" --count 10 > /dev/null
COMFYVN_RUNTIME_ROOT="$work/down" "$BIN" export run > /dev/null 2>&1 &
pids+=("$!")
sleep 0.5
runs=()
for i in 1 2 3; do
  "$EX/hook_emitter" --root "$work/down" --count "$N" > "$work/down$i.json"
  runs+=("$(json "$work/down$i.json" "['emit_us_mean']")")
done
down_us=$(best "${runs[@]}")
retries=$(json "$work/down/data/otlp/status.json" "['retries']" 2>/dev/null || echo "?")
echo "emit with the collector down, exporter retrying: ${down_us} us/event (runs: ${runs[*]}; $retries retries meanwhile)"

python3 - "$base_us" "$down_us" "$best_s" "$N" "$p50" <<'PY'
import sys
base, down, secs, n, p50 = (float(x) for x in sys.argv[1:])
rate = n / secs
print(f"export rate: {rate:,.0f} events/s; ratio to the 20,000 events/s target: {rate / 20000:.2f}")
print(f"ratio p50 emit-to-collector delay / 1 s target: {p50 / 1000:.2f}")
print(f"ratio emit cost (collector down) / baseline: {down / base:.2f}")
PY
