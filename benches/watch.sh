#!/usr/bin/env bash
# Watcher benchmark (release build): burst, single-file latency next to inotifywait, idle cost.
#
#   benches/watch.sh [--files 2000] [--size-kb 50] [--drops 100] [--idle-assets 20000] [--idle-secs 10]
#
# 1. Burst: `cp -r` of FILES files (FILES x SIZE-KB, default 2,000 x 50 KB = 100 MB) into a watched
#    assets root; time from the end of the copy to the last `on_asset_registered` (history `ts`), plus
#    a check that every file has a sidecar and exactly one registration. Target: <= 5 s.
# 2. Latency: DROPS files written one at a time (open, write, close); for each, the time from the
#    writer's close to (a) inotifywait printing the close_write event (the floor) and (b) the
#    watcher's `on_asset_registered` line (its `ts`). Reports p50/p90/max and the ratio to the floor.
#    Target: p50 <= 20 ms.
# 3. Idle: a tree of IDLE-ASSETS registered assets; after start-up, CPU time used over IDLE-SECS of
#    quiet and the resident set size. Targets: ~0 % CPU, RSS <= 40 MB.
#
# Needs python3 (timing driver) and inotifywait (installed with apt-get when missing).
set -euo pipefail

FILES=2000
SIZE_KB=50
DROPS=100
IDLE_ASSETS=20000
IDLE_SECS=10
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES=$2; shift 2 ;;
    --size-kb) SIZE_KB=$2; shift 2 ;;
    --drops) DROPS=$2; shift 2 ;;
    --idle-assets) IDLE_ASSETS=$2; shift 2 ;;
    --idle-secs) IDLE_SECS=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
if ! command -v inotifywait >/dev/null; then
  echo "installing inotify-tools (for the inotifywait floor)…" >&2
  apt-get install -y inotify-tools >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y inotify-tools >/dev/null; }
fi
cargo build --release --quiet
BIN=$PWD/target/release/comfyvn-obs
WORK=$(mktemp -d /tmp/comfyvn-watch-bench.XXXXXX)
WATCH_PID=""
cleanup() {
  [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_watcher ROOT: start `watch` on ROOT and wait for its start-up reconcile.
start_watcher() {
  local root=$1
  mkdir -p "$root/assets"
  local before=0
  [ -f "$root/logs/hooks/history.jsonl" ] && before=$(wc -l < "$root/logs/hooks/history.jsonl")
  COMFYVN_RUNTIME_ROOT=$root "$BIN" -q watch 2>"$root/watch.stderr" &
  WATCH_PID=$!
  for _ in $(seq 1 6000); do
    if [ -f "$root/logs/hooks/history.jsonl" ] &&
       tail -n +$((before + 1)) "$root/logs/hooks/history.jsonl" | grep -q '"obs.watch_rescanned"'; then
      return 0
    fi
    sleep 0.01
  done
  echo "watcher did not start:" >&2; cat "$root/watch.stderr" >&2; exit 1
}

stop_watcher() {
  kill -TERM "$WATCH_PID"; wait "$WATCH_PID" || true; WATCH_PID=""
}

echo "== comfyvn-obs watch benchmark ($(nproc) cores, $(uname -r))"

# ---------------------------------------------------------------- 1. burst
SRC=$WORK/src/pack
python3 - "$SRC" "$FILES" "$SIZE_KB" <<'EOF'
import os, sys
src, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(src, f"d{i % 40:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"img{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(kb * 1024))
EOF
ROOT=$WORK/burst
start_watcher "$ROOT"
COPY_END=$(python3 - "$SRC" "$ROOT/assets/" <<'EOF'
import subprocess, sys, time
subprocess.run(["cp", "-r", sys.argv[1], sys.argv[2]], check=True)
print(f"{time.time():.6f}")
EOF
)
python3 - "$ROOT" "$FILES" "$COPY_END" <<'EOF'
import json, os, sys, time
root, n, copy_end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
hist = os.path.join(root, "logs/hooks/history.jsonl")
deadline = time.time() + 120
while True:
    reg = []
    with open(hist) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e["event"] == "on_asset_registered":
                reg.append(e)
    if len(reg) >= n or time.time() > deadline:
        break
    time.sleep(0.02)
time.sleep(1.0)  # anything late (a duplicate) would show up now
with open(hist) as f:
    reg = [e for e in (json.loads(l) for l in f if l.strip()) if e["event"] == "on_asset_registered"]
paths = [e["data"]["path"] for e in reg]
sidecars = sum(1 for d, _, fs in os.walk(os.path.join(root, "assets")) for x in fs if x.endswith(".asset.json"))
last = max(e["ts"] for e in reg) if reg else float("nan")
mb = sum(os.path.getsize(os.path.join(d, x)) for d, _, fs in os.walk(os.path.join(root, "assets"))
         for x in fs if not x.endswith(".asset.json")) / 1e6
print(f"burst: {n} files, {mb:.0f} MB copied with cp -r")
print(f"  sidecars: {sidecars}/{n}; on_asset_registered: {len(reg)} events, {len(set(paths))} distinct paths")
print(f"  all registered {last - copy_end:.2f} s after the copy ended (target <= 5 s)")
ok = sidecars == n and len(reg) == n and len(set(paths)) == n
print(f"  exactly one registration per file: {'yes' if ok else 'NO'}")
EOF
stop_watcher

# ---------------------------------------------------------------- 2. latency
ROOT=$WORK/latency
start_watcher "$ROOT"
mkdir -p "$ROOT/assets/drops"
python3 - "$ROOT" "$DROPS" <<'EOF'
import json, os, subprocess, sys, threading, time
root, n = sys.argv[1], int(sys.argv[2])
folder = os.path.join(root, "assets/drops")
hist = os.path.join(root, "logs/hooks/history.jsonl")
seen = {}
iw = subprocess.Popen(["inotifywait", "-q", "-m", "-e", "close_write", "--format", "%f", folder],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
def reader():
    for line in iw.stdout:
        seen.setdefault(line.strip(), time.time())
threading.Thread(target=reader, daemon=True).start()
time.sleep(0.5)  # let inotifywait set its watch
hf = open(hist)
hf.seek(0, 2)
buf = ""
def registered(name, deadline):
    global buf
    while time.time() < deadline:
        buf += hf.read()
        *lines, buf = buf.split("\n")
        for l in lines:
            try:
                e = json.loads(l)
            except ValueError:
                continue
            if e["event"] == "on_asset_registered" and e["data"]["path"] == f"drops/{name}":
                return e["ts"]
        time.sleep(0.001)
    return None
floor, lat = [], []
for i in range(n):
    name = f"drop{i:04d}.png"
    f = open(os.path.join(folder, name), "wb")
    f.write(os.urandom(64 * 1024))
    closed = time.time()  # taken just before close(): both latencies include the close call
    f.close()
    ts = registered(name, closed + 5)
    t_iw = seen.get(name)
    if ts is not None:
        lat.append((ts - closed) * 1000)
    if t_iw is not None:
        floor.append((t_iw - closed) * 1000)
    time.sleep(0.02)
iw.terminate()
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")
print(f"latency: {n} drops of 64 KB, close -> event (ms)")
print(f"  inotifywait (floor): p50 {pct(floor,50):7.2f}  p90 {pct(floor,90):7.2f}  max {max(floor):7.2f}  ({len(floor)} seen)")
print(f"  on_asset_registered: p50 {pct(lat,50):7.2f}  p90 {pct(lat,90):7.2f}  max {max(lat):7.2f}  ({len(lat)} seen)")
print(f"  p50 ratio to the floor: {pct(lat,50)/max(pct(floor,50),1e-3):.0f}x (target p50 <= 20 ms)")
EOF
stop_watcher

# ---------------------------------------------------------------- 3. idle
ROOT=$WORK/idle
python3 - "$ROOT/assets" "$IDLE_ASSETS" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"set{i // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"a{i:05d}.txt"), "w") as f:
        f.write(f"asset {i}\n")
EOF
# First start registers everything; the measured start finds every sidecar in place.
start_watcher "$ROOT"
stop_watcher
start_watcher "$ROOT"
sleep 1
TICKS=$(getconf CLK_TCK)
read -r U0 S0 < <(awk '{print $14, $15}' "/proc/$WATCH_PID/stat")
sleep "$IDLE_SECS"
read -r U1 S1 < <(awk '{print $14, $15}' "/proc/$WATCH_PID/stat")
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$WATCH_PID/status")
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$WATCH_PID/status")
python3 - "$U0" "$S0" "$U1" "$S1" "$TICKS" "$IDLE_SECS" "$RSS" "$HWM" "$IDLE_ASSETS" <<'EOF'
import sys
u0, s0, u1, s1, hz, secs, rss, hwm, n = map(float, sys.argv[1:])
cpu = ((u1 + s1) - (u0 + s0)) / hz
print(f"idle: {int(n)} assets in {int(n) // 100} folders, native mode, {int(secs)} s of quiet")
print(f"  CPU {cpu * 1000:.0f} ms over {int(secs)} s = {100 * cpu / secs:.2f} %   RSS {rss / 1024:.1f} MB (peak {hwm / 1024:.1f} MB; target <= 40 MB)")
EOF
stop_watcher
