#!/usr/bin/env bash
# Soak and fault harness for `serve` (watcher, webhook worker, stream clients), then invariant checks.
#
#   bash benches/soak.sh                  # short form (CI): DURATION=90 seconds
#   DURATION=1800 bash benches/soak.sh    # long form: 30 minutes
#
# Phase 1 (faults, the first 40 %): files dropped, edited, renamed and deleted under assets/; events
# emitted by other processes; SSE and WebSocket clients that connect and vanish; the webhook receiver killed and
# restarted; `kill -9` of the server and a restart; one restart under `ulimit -n 96` with 150 idle
# clients exhausting the descriptors. Phase 2 (steady): the same churn without kills, idle gaps longer
# than the I/O timeout, RSS and descriptors sampled each round. Then benches/soak_check.py checks the
# invariants and prints them; exit 1 if any fails. Uses the debug build unless SOAK_RELEASE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-90}
IO_TIMEOUT_MS=1000
IN_FLIGHT=4

if [ "${SOAK_RELEASE:-0}" = 1 ]; then
  cargo build --release --locked --quiet --bin comfyvn-obs
  BIN=$PWD/target/release/comfyvn-obs
else
  cargo build --locked --quiet --bin comfyvn-obs
  BIN=$PWD/target/debug/comfyvn-obs
fi
command -v curl >/dev/null || { echo "soak: curl is needed" >&2; exit 2; }

work=$(mktemp -d)
root=$work/root
SERVE=
RECV=
cleanup() {
  [ -n "$SERVE" ] && kill -9 "$SERVE" 2>/dev/null || true
  [ -n "$RECV" ] && kill "$RECV" 2>/dev/null || true
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "soak: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RPORT=$(free_port)
mkdir -p "$root/config" "$root/assets/soak"
cat > "$root/config/comfyvn.json" <<JSON
{"obs": {
  "server": {"io_timeout_ms": $IO_TIMEOUT_MS},
  "hooks": {"history_max_bytes": 65536, "history_keep": 1000},
  "webhooks": {"retry_schedule_ms": [200, 500, 1000], "poll_ms": 20, "in_flight_per_receiver": $IN_FLIGHT}
}}
JSON
obs() { COMFYVN_RUNTIME_ROOT=$root "$BIN" "$@"; }
health() { curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/health"; }

start_serve() { # [nofile limit]
  local limit=${1:-}
  (
    if [ -n "$limit" ]; then ulimit -n "$limit"; fi
    exec env COMFYVN_RUNTIME_ROOT="$root" "$BIN" serve --bind "127.0.0.1:$PORT"
  ) >/dev/null 2>>"$work/serve.err" &
  SERVE=$!
  for _ in $(seq 1 200); do health && return 0; sleep 0.05; done
  echo "soak: serve did not answer after starting" >&2
  tail -20 "$work/serve.err" >&2
  exit 1
}
recv_up() {
  [ -n "$RECV" ] && return 0
  python3 benches/soak_receiver.py "$RPORT" "$work/ids.txt" &
  RECV=$!
}
recv_down() { [ -n "$RECV" ] && kill "$RECV" 2>/dev/null; wait "$RECV" 2>/dev/null || true; RECV=; }

touch "$work/ids.txt" "$work/samples.txt" "$work/ws.err"
start_serve
recv_up
since=$(obs webhooks add --event '*' --url "http://127.0.0.1:$RPORT/h" --secret soak-secret --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["webhook"]["since_seq"])')

kills=0 restarts=0 health_failures=0 rounds=0 emitted=0 sse=0 ws=0
started=$(date +%s)
fault_until=$((started + DURATION * 2 / 5))
end=$((started + DURATION))
exhausted=0
d=$root/assets/soak
i=0
while [ "$(date +%s)" -lt "$end" ]; do
  now=$(date +%s)
  # Files: drop, edit, rename (like a safe-write), delete.
  head -c 2048 /dev/urandom > "$d/f$i.png"
  [ $i -ge 1 ] && echo "edit $i" >> "$d/f$((i - 1)).png"
  [ $i -ge 2 ] && mv "$d/f$((i - 2)).png" "$d/r$((i - 2)).png"
  [ $i -ge 4 ] && rm -f "$d/r$((i - 4)).png"
  # Events from other processes.
  for k in 1 2 3 4 5; do obs hooks emit on_scene_enter --data "{\"round\": $i, \"k\": $k}" >/dev/null; done
  emitted=$((emitted + 5))
  # Stream clients that connect and vanish.
  curl -sN --max-time 1.5 "http://127.0.0.1:$PORT/api/modder/hooks/stream" >/dev/null 2>&1 &
  sse=$((sse + 1))
  python3 benches/soak_ws.py "$PORT" 1.5 2>>"$work/ws.err" &
  ws=$((ws + 1))
  # The receiver goes down for two rounds in five.
  case $((i % 5)) in 2) recv_down ;; 4) recv_up ;; esac
  if [ "$now" -lt "$fault_until" ]; then
    if [ $((i % 6)) = 3 ]; then
      kill -9 "$SERVE"; wait "$SERVE" 2>/dev/null || true
      kills=$((kills + 1)); restarts=$((restarts + 1))
      start_serve
    fi
  else
    if [ "$exhausted" = 0 ]; then
      # Descriptors run out: restart under a low limit, exhaust it with idle clients, release them.
      kill -TERM "$SERVE"; wait "$SERVE" 2>/dev/null || true
      restarts=$((restarts + 1))
      start_serve 96
      python3 -c '
import socket, sys, time
cs = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(150)]
time.sleep(2)
for c in cs: c.close()
' "$PORT"
      ok=0
      for _ in $(seq 1 100); do health && { ok=1; break; }; sleep 0.1; done
      [ $ok = 1 ] || { echo "soak: serve did not recover after descriptors ran out" >&2; exit 1; }
      # Back to a normal limit for the steady phase.
      kill -TERM "$SERVE"; wait "$SERVE" 2>/dev/null || true
      restarts=$((restarts + 1))
      start_serve
      exhausted=1
      steady_round=0
    fi
    steady_round=$((steady_round + 1))
    # Idle gap longer than the I/O timeout.
    [ $((i % 4)) = 1 ] && sleep $(((IO_TIMEOUT_MS * 5 / 2) / 1000)).5
    if [ "$steady_round" -gt 3 ]; then
      echo "$(awk '/VmRSS/{print $2}' "/proc/$SERVE/status") $(ls "/proc/$SERVE/fd" | wc -l)" >> "$work/samples.txt"
    fi
  fi
  health || health_failures=$((health_failures + 1))
  i=$((i + 1)); rounds=$i
  sleep 0.3
done

# Let deliveries catch up with the receiver up, then stop the server cleanly.
recv_up
wait_for_deliveries() {
  python3 - "$root" "$work/ids.txt" "$since" <<'PY'
import glob, json, os, re, sys, time
root, ids, since = sys.argv[1], sys.argv[2], int(sys.argv[3])
hist = os.path.join(root, "logs/hooks/history.jsonl")
# Done when every event is delivered and the history has not grown for QUIET seconds: the watcher
# reports the last round's files only after its settle window and removal grace (500 ms), so an
# early poll could pass before their events were appended, and the server would be stopped before
# delivering them (they wait in the history for the next start; the check would call them missing).
QUIET = 3
deadline = time.time() + 120
last, grown_at = None, time.time()
while time.time() < deadline:
    seqs = set()
    for p in glob.glob(hist + "*"):
        for line in open(p, "rb"):
            try: seqs.add(json.loads(line)["seq"])
            except Exception: pass
    if seqs != last:
        last, grown_at = seqs, time.time()
    got = {int(m.group(1)) for m in (re.match(r"msg_(\d+)_", l) for l in open(ids)) if m}
    if all(s in got for s in seqs if s > since) and time.time() - grown_at >= QUIET:
        sys.exit(0)
    time.sleep(0.5)
PY
}
wait_for_deliveries || true
health || health_failures=$((health_failures + 1))
kill -TERM "$SERVE"; wait "$SERVE" 2>/dev/null || true
SERVE=
recv_down

echo "soak: ${DURATION}s, $rounds rounds, $emitted events emitted by other processes, $sse SSE and $ws WebSocket clients," \
  "$kills kill -9, $restarts restarts, 1 descriptor-exhaustion run"
ok=0
check() { echo "[$([ "$1" = 0 ] && echo 'ok  ' || echo 'FAIL')] $2"; [ "$1" = 0 ] || ok=1; }
check "$health_failures" "the server answered every health check ($health_failures failures)"
ws_refused=$(grep -c "upgrade refused" "$work/ws.err" || true)
# A client started while the server was being killed and restarted may find nobody listening, or lose
# its connection before the answer; only an answer other than 101 is a failure.
check "$ws_refused" "every WebSocket upgrade that got an answer was answered 101 ($ws_refused refused)"
[ "$ws_refused" = 0 ] || grep "upgrade refused" "$work/ws.err" | sort | uniq -c
set +e
audit_out=$(obs audit --fail-on error 2>&1); audit_rc=$?
set -e
check "$audit_rc" "every asset has a correct sidecar (audit --fail-on error: exit $audit_rc)"
[ "$audit_rc" = 0 ] || echo "$audit_out" | tail -20
python3 benches/soak_check.py "$root" "$work/ids.txt" "$since" "$work/samples.txt" "$kills" "$IN_FLIGHT" || ok=1
grep -c "out of file descriptors" "$work/serve.err" | xargs echo "soak: exhaustion warnings logged:"
if [ $ok != 0 ]; then
  echo "soak: FAILED; server log tail:"; tail -20 "$work/serve.err"
  exit 1
fi
echo "soak: all invariants hold"
