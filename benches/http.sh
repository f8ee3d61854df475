#!/usr/bin/env bash
# HTTP benchmarks. Not a test: prints figures and ratios, asserts nothing.
#
# Runs `wrk -t2 -c32 -d10s` on loopback against a release `comfyvn-obs serve` and, in the same run, a
# bare tiny_http server (examples/baseline_http.rs) on the same number of workers, then prints
# requests/s, latency percentiles and the ratio to the baseline. Also: history reads with a 1,000,000
# line history (p99), `/assets?tag=x` over a 20,000-asset tree, a normal request while 200 idle
# keep-alive connections are open, and the server's peak RSS (history and asset index both loaded). Routes that answer 404 are reported as skipped.
#
# Usage: benches/http.sh            (DURATION=10s CONNECTIONS=32 THREADS=2 WORKERS=8 to override)
# wrk is installed with apt-get when missing and possible; otherwise the bench is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-8}
HISTORY_LINES=${HISTORY_LINES:-1000000}
ASSETS=${ASSETS:-20000}

if ! command -v wrk >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing wrk with apt-get…" >&2
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1; } || true
  fi
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is not available (apt-get install wrk); skipping the HTTP benchmarks"
  exit 0
fi

cargo build --release --quiet --bin comfyvn-obs --example baseline_http
BIN=target/release/comfyvn-obs
BASE=target/release/examples/baseline_http

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Start a server in the background (in this shell, so cleanup can stop it); its stderr goes to $1.
launch() {
  local log=$1; shift
  "$@" 2>"$log" &
  PIDS+=($!)
}

# Wait for `listening on http://ADDR` in a server's stderr; echo ADDR.
address() {
  for _ in $(seq 1 100); do
    if grep -q 'listening on http://' "$1"; then
      grep -o 'listening on http://[^ ]*' "$1" | head -1 | sed 's|listening on http://||'
      return
    fi
    sleep 0.1
  done
  echo "server did not start: $(cat "$1")" >&2
  exit 1
}

# wrk one URL; prints "req/s p50 p99" (latencies in ms).
bench() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'
}

# A runtime root with a 1,000,000-line hook history (written directly: emitting that many through the
# CLI would take minutes).
ROOT=$WORK/root
mkdir -p "$ROOT/logs/hooks"
echo "writing a ${HISTORY_LINES}-line hook history…" >&2
awk -v n="$HISTORY_LINES" 'BEGIN { for (i = 1; i <= n; i++)
  printf "{\"seq\":%d,\"event\":\"on_scene_enter\",\"ts\":1790000000.%06d,\"data\":{\"scene_id\":\"s%d\",\"node\":\"n%d\"}}\n", i, i % 1000000, i % 97, i }' \
  >"$ROOT/logs/hooks/history.jsonl"

# A 20,000-asset tree with sidecars (every 100th asset tagged `x`, so `/assets?tag=x` fills one
# default page of 200), written directly in the sidecar format.
echo "writing ${ASSETS}-asset tree…" >&2
python3 - "$ROOT/assets" "$ASSETS" <<'PY'
import hashlib, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
types = ["characters", "backgrounds", "audio", "props", "ui"]
for i in range(n):
    t = types[i % len(types)]
    rel = f"{t}/pack{i % 40:02d}/asset{i:05d}.png"
    data = f"asset {i} ".encode() * (1 + i % 7)
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    h = hashlib.sha256(data).hexdigest()
    tags = [t, f"pack{i % 40:02d}"] + (["x"] if i % 100 == 0 else [])
    side = {"schema": 1, "uid": h[:16], "type": t, "path": rel, "hash": h, "bytes": len(data),
            "tags": tags, "license": "CC-BY-4.0" if i % 3 else "MIT", "origin": "bench", "version": 1,
            "created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z",
            "meta": {"note": f"bench asset {i}"}, "provenance": {"source": "bench"}}
    with open(path + ".asset.json", "w") as f:
        json.dump(side, f, indent=2)
        f.write("\n")
PY

launch "$WORK/serve.log" env COMFYVN_RUNTIME_ROOT="$ROOT" "$BIN" -q serve --bind 127.0.0.1:0 --no-watch --workers "$WORKERS"
SERVE_PID=$!
launch "$WORK/base.log" "$BASE" 127.0.0.1:0 "$WORKERS"
SERVE_ADDR=$(address "$WORK/serve.log")
BASE_ADDR=$(address "$WORK/base.log")
rss_start_kb=$(awk '/VmRSS/ {print $2}' "/proc/$SERVE_PID/status" 2>/dev/null || echo 0)

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $WORKERS workers, $(nproc) cores"
read -r base_rps base_p50 base_p99 < <(bench "http://$BASE_ADDR/")
printf '%-44s %10s req/s  p50 %7s ms  p99 %7s ms\n' "baseline (bare tiny_http)" "$base_rps" "$base_p50" "$base_p99"

for route in /health /api/telemetry/health "/api/modder/hooks/history?limit=10" "/assets?tag=x"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$SERVE_ADDR$route")
  if [ "$code" = 404 ]; then
    printf '%-44s skipped (answered 404)\n' "$route"
    continue
  fi
  read -r rps p50 p99 < <(bench "http://$SERVE_ADDR$route")
  ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.2f", a / b }')
  printf '%-44s %10s req/s  p50 %7s ms  p99 %7s ms  %sx baseline\n' "$route" "$rps" "$p50" "$p99" "$ratio"
done

# A normal client while 200 idle keep-alive connections are open.
python3 - "$SERVE_ADDR" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
idle = []
for _ in range(200):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    s.recv(4096)
    idle.append(s)
t = time.perf_counter()
c = socket.create_connection((host, int(port)))
c.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
data = b""
while chunk := c.recv(4096):
    data += chunk
ms = (time.perf_counter() - t) * 1000
print(f"{'/health with 200 idle keep-alive connections':<44} {ms:10.2f} ms  ({data.split(b' ')[1].decode()})")
for s in idle:
    s.close()
EOF

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$SERVE_PID/status" 2>/dev/null || echo 0)
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status" 2>/dev/null || echo 0)
printf '%-44s %10s MiB RSS after start, %s MiB at the end, %s MiB peak (%s-line history, %s assets)\n' "serve" \
  "$(mib "$rss_start_kb")" "$(mib "$rss_kb")" "$(mib "$hwm_kb")" "$HISTORY_LINES" "$ASSETS"
