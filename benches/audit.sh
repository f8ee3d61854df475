#!/usr/bin/env bash
# Registry/audit benchmark. Prints medians and ratios against baselines measured
# in the same run:
#   1. `audit --full` vs the machine's SHA-256 limit (`openssl speed -bytes 65536 sha256` per core
#      x cores, over the bytes the audit hashes)                              target: <= 1.3x the limit
#      (and, for reference, vs `sha256sum -c` of a manifest of the same files)
#   2. re-audit with nothing changed (stat-only), median and peak RSS         target: <= 0.2 s, <= 100 MB
#   3. first `audit --fix` after `sync` (FILES sidecars) vs `cp -r` of as many sidecars + `sync`
#                                                                            target: <= 1.5 s
#   4. `hooks tail -n 10` on a 1,000,000-line history vs `tail -n 10`        target: <= 2x
#   5. re-audit with nothing changed of SMALL_FILES small files (0.5-4 KiB, 100 a folder) whose
#      sidecars give 3 warnings each (300,000 for 100,000) vs `find -printf` stat'ing the same tree
#                                                                            target: <= 0.5 s, <= 150 MB
#   6. `serve` over the SMALL_FILES tree: RSS, and `GET /assets?q=` p99 vs `GET /health` p99
#      (wrk -t1 -c4 -d5s, when wrk is installed)                             target: <= 120 MB, <= 20 ms
#
# The corpora are deterministic (seeded): FILES files of 1-100 KiB (~1 GB for 20,000) in 5 type
# folders, and SMALL_FILES files of 0.5-4 KiB with sidecars, generated once under BENCH_DIR (default
# /tmp/comfyvn-obs-bench, never in the repo).
# Uses hyperfine when installed, else a loop timed with bash's $EPOCHREALTIME; peak RSS comes from
# /usr/bin/time. Needs python3 (corpus generator), sha256sum and tail.
#
#   benches/audit.sh                 # full run
#   FILES=2000 SMALL_FILES=10000 RUNS=3 benches/audit.sh   # a quick smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/tmp/comfyvn-obs-bench}
FILES=${FILES:-20000}
RUNS=${RUNS:-5}
HISTORY_LINES=${HISTORY_LINES:-1000000}
SMALL_FILES=${SMALL_FILES:-100000}

cargo build --release --quiet
BIN=$PWD/target/release/comfyvn-obs
CORPUS=$BENCH_DIR/corpus-$FILES # asset files only; never holds sidecars
MANIFEST=$CORPUS/manifest.sha256
CLEAN=$BENCH_DIR/clean-$FILES   # hard links to the corpus plus complete, valid sidecars
HROOT=$BENCH_DIR/hooks-root
HISTORY=$HROOT/logs/hooks/history.jsonl
SMALL=$BENCH_DIR/small-$SMALL_FILES # small files with sidecars that carry 3 warnings each
SIDECARS=$BENCH_DIR/sidecars-$FILES # the clean tree's sidecars alone (phase 3's baseline copies them)
export BIN CLEAN MANIFEST HROOT HISTORY SMALL # for the functions hyperfine runs in a child shell
mkdir -p "$BENCH_DIR"
unset COMFYVN_RUNTIME_ROOT COMFYVN_LOG_DIR COMFYVN_CONFIG_DIR COMFYVN_DATA_DIR COMFYVN_CACHE_DIR COMFYVN_ASSETS_ROOT

# ---------------------------------------------------------------- corpus (once) ------------------
if [[ ! -f $MANIFEST ]]; then
  echo "generating $FILES files under $CORPUS/assets ..." >&2
  rm -rf "$CORPUS" "$CLEAN"
  python3 - "$CORPUS/assets" "$FILES" "$MANIFEST" <<'PY'
import hashlib, os, random, sys
root, n, manifest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
folders = [("characters", "png"), ("backgrounds", "png"), ("audio", "ogg"), ("ui", "png"), ("scenes", "json")]
rng = random.Random(20261128)
lines = []
for i in range(n):
    folder, ext = folders[i % len(folders)]
    rel = f"{folder}/{folder[:4]}_{i:06d}.{ext}"
    size = rng.randint(1024, 100 * 1024)
    data = rng.randbytes(size)
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
with open(manifest + ".tmp", "w") as f:
    f.writelines(lines)
os.replace(manifest + ".tmp", manifest)
PY
fi

# The clean tree: a copy of the corpus (not hard links: the fix runs below link the corpus, which
# changes its inodes' ctime and would invalidate this tree's stat cache) with complete sidecars (tags,
# license, provenance) written from the manifest, once.
if [[ ! -f $CLEAN/.done ]]; then
  rm -rf "$CLEAN"
  mkdir -p "$CLEAN"
  cp -a "$CORPUS/assets" "$CLEAN/assets"
  python3 - "$CLEAN/assets" "$MANIFEST" <<'PY'
import json, os, sys
root, manifest = sys.argv[1], sys.argv[2]
for line in open(manifest):
    h, rel = line.rstrip("\n").split("  ", 1)
    size = os.path.getsize(os.path.join(root, rel))
    doc = {"schema": 1, "uid": h[:16], "type": rel.split("/")[0], "path": rel, "hash": h, "bytes": size,
           "tags": [rel.split("/")[0], "bench"], "license": "CC-BY-4.0", "origin": "bench", "version": 1,
           "created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z",
           "meta": {}, "provenance": {"source": "benches/audit.sh"}}
    with open(os.path.join(root, rel + ".asset.json"), "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
PY
  touch "$CLEAN/.done"
fi
if [[ ! -f $SIDECARS/.done ]]; then
  rm -rf "$SIDECARS"
  mkdir -p "$SIDECARS"
  (cd "$CLEAN/assets" && find . -name '*.asset.json' -print0 | xargs -0 cp --parents -t "$SIDECARS")
  touch "$SIDECARS/.done"
fi

# The small-file tree: SMALL_FILES files of 0.5-4 KiB, 100 to a folder, each with a valid sidecar
# that has no tags, license or provenance (3 warnings each), written once.
if [[ ! -f $SMALL/.done ]]; then
  echo "generating $SMALL_FILES small files with sidecars under $SMALL/assets ..." >&2
  rm -rf "$SMALL"
  python3 - "$SMALL/assets" "$SMALL_FILES" <<'PY'
import hashlib, json, os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261203)
for i in range(n):
    rel = f"scenes/s{i // 100:05d}/line_{i:06d}.json"
    data = rng.randbytes(rng.randint(512, 4096))
    path = os.path.join(root, rel)
    if i % 100 == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    h = hashlib.sha256(data).hexdigest()
    doc = {"schema": 1, "uid": h[:16], "type": "scenes", "path": rel, "hash": h, "bytes": len(data),
           "tags": [], "license": None, "origin": "bench", "version": 1,
           "created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z",
           "meta": {"title": f"line {i}"}, "provenance": {}}
    with open(path + ".asset.json", "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
PY
  touch "$SMALL/.done"
fi

# ---------------------------------------------------------------- timing helpers -----------------
# On a shared machine, BENCH_QUIET_LOAD=1.0 waits (up to 5 min per phase) for the 1-minute load
# average to drop below that value before each phase.
wait_quiet() {
  [[ -z ${BENCH_QUIET_LOAD:-} ]] && return 0
  for ((w = 0; w < 60; w++)); do
    python3 -c "import os, sys; sys.exit(0 if os.getloadavg()[0] < $BENCH_QUIET_LOAD else 1)" && return 0
    sleep 5
  done
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "print('%.4f' % ($2 - $1))"; }
median() { sort -g | python3 -c 'import sys; v=[float(x) for x in sys.stdin]; print("%.4f" % v[len(v)//2])'; }

# median_of RUNS CMD...: median wall time in seconds (one warm-up run first).
median_of() {
  local runs=$1; shift
  # A command that fails as a tool (exit 2 and up: an error, not a finding) would be timed as
  # nothing at all, so it stops the bench instead.
  local rc=0
  "$@" >/dev/null 2>&1 || rc=$?
  if ((rc >= 2)); then
    echo "error: the timed command failed with exit code $rc: $*" >&2
    exit 2
  fi
  if command -v hyperfine >/dev/null; then
    local json; json=$(mktemp)
    # bash, not hyperfine's default sh: the command line is quoted with printf %q, whose $'...'
    # form (for the multi-line functions `paired` passes) sh does not read. -i: exit code 1
    # (audit findings) is an answer, not a failure.
    hyperfine --shell bash --style none --warmup 1 --runs "$runs" -i --export-json "$json" -- "$(printf '%q ' "$@")" >/dev/null 2>&1
    python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$json"
    rm -f "$json"
    return
  fi
  local t0 t1
  for ((i = 0; i < runs; i++)); do
    t0=$(now); "$@" >/dev/null 2>&1 || true; t1=$(now)
    elapsed "$t0" "$t1"
  done | median
}

# paired RUNS FN_A FN_B: calls the shell functions A and B alternately (so load changes hit both
# alike), one warm-up each, and prints "median_A median_B". With hyperfine, each is measured by it.
paired() {
  local runs=$1 a=$2 b=$3
  if command -v hyperfine >/dev/null; then
    echo "$(median_of "$runs" bash -c "$(declare -f "$a"); $a") $(median_of "$runs" bash -c "$(declare -f "$b"); $b")"
    return
  fi
  "$a" >/dev/null 2>&1 || true
  "$b" >/dev/null 2>&1 || true
  local ta=() tb=() t0 t1
  for ((i = 0; i < runs; i++)); do
    t0=$(now); "$a" >/dev/null 2>&1 || true; t1=$(now); ta+=("$(elapsed "$t0" "$t1")")
    t0=$(now); "$b" >/dev/null 2>&1 || true; t1=$(now); tb+=("$(elapsed "$t0" "$t1")")
  done
  echo "$(printf '%s\n' "${ta[@]}" | median) $(printf '%s\n' "${tb[@]}" | median)"
}

# cpu_of CMD...: user + system seconds of one run.
cpu_of() {
  local out; out=$(mktemp)
  /usr/bin/time -f '%U %S' -o "$out" "$@" >/dev/null 2>&1 || true
  python3 -c "u, s = open('$out').read().split()[-2:]; print('%.2f' % (float(u) + float(s)))"
  rm -f "$out"
}

# peak_rss_mb CMD...: peak resident set size of one run, in MB.
peak_rss_mb() {
  local out; out=$(mktemp)
  /usr/bin/time -f '%M' -o "$out" "$@" >/dev/null 2>&1 || true
  python3 -c "print('%.1f' % (int(open('$out').read().split()[-1]) / 1024))"
  rm -f "$out"
}

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
verdict() { python3 -c "print('PASS' if $1 else 'FAIL')"; }

echo "corpus: $FILES files, $(du -sh --apparent-size "$CORPUS/assets" | cut -f1) under $CORPUS; $(nproc) cores" >&2

# ---------------------------------------------------------------- 1. full audit vs sha256sum ------
rm -rf "$CLEAN/cache" "$CLEAN/logs"
wait_quiet
# The SHA-256 limit: one core's throughput on 64 KiB blocks (openssl prints 1000s of bytes/s), times
# the cores, over the bytes an audit --full hashes (the assets; sidecars are parsed, not hashed).
sha_core=$(openssl speed -bytes 65536 -seconds 2 sha256 2>/dev/null | awk '$1 == "sha256" {v = $NF; sub(/k$/, "", v); print v * 1000}')
hashed_bytes=$(find "$CLEAN/assets" -type f ! -name '*.asset.json' -printf '%s\n' | awk '{s += $1} END {print s}')
sha_limit=$(python3 -c "print('%.4f' % ($hashed_bytes / ($sha_core * $(nproc))))")
run_sha256sum() { (cd "$CLEAN/assets" && sha256sum -c --quiet "$MANIFEST"); }
run_full_audit() { "$BIN" --root "$CLEAN" audit --full --format json; }
read -r sha full < <(paired "$RUNS" run_sha256sum run_full_audit)
full_cpu=$(cpu_of "$BIN" --root "$CLEAN" audit --full --format json)
"$BIN" --root "$CLEAN" audit --full >/dev/null || echo "warning: the clean corpus did not pass the audit" >&2
load1=$(cut -d' ' -f1 /proc/loadavg)

# ---------------------------------------------------------------- 2. stat-only re-audit ----------
sleep 2.1 # let the last writes age past the cache's 2 s racy window
"$BIN" --root "$CLEAN" audit >/dev/null || true # settles the cache
wait_quiet
reaudit=$(median_of $((RUNS * 2)) "$BIN" --root "$CLEAN" audit --format json)
reaudit_cpu=$(cpu_of "$BIN" --root "$CLEAN" audit --format json)
load2=$(cut -d' ' -f1 /proc/loadavg)
rss=$(peak_rss_mb "$BIN" --root "$CLEAN" audit --format json)

# ---------------------------------------------------------------- 3. first --fix ----------------
# Baseline: copying as many sidecar files into a fresh folder, then `sync`.
copy_times=()
for ((r = 0; r < 3; r++)); do
  d=$BENCH_DIR/copy-runs/$$-$r
  mkdir -p "$(dirname "$d")"
  sync
  t0=$(now)
  cp -r "$SIDECARS" "$d" && sync
  t1=$(now)
  copy_times+=("$(elapsed "$t0" "$t1")")
done
copy=$(printf '%s\n' "${copy_times[@]}" | median)
# Each run gets a fresh tree of hard links that never held sidecars. Nothing is deleted before the
# measurement: on ext4 without a journal, creating files next to recently deleted ones is slow
# (the inode allocator skips inodes deleted in the last 5-300 s), which would measure the cleanup.
fix_times=()
runs_dir=$BENCH_DIR/fix-runs
stale=$(ls -d "$runs_dir"/* 2>/dev/null || true)
wait_quiet
for ((r = 0; r < 3; r++)); do
  t=$runs_dir/$$-$r
  mkdir -p "$t"
  cp -al "$CORPUS/assets" "$t/assets"
  sync
  t0=$(now)
  "$BIN" --root "$t" audit --fix --format json >/dev/null || true
  t1=$(now)
  fix_times+=("$(elapsed "$t0" "$t1")")
done
fix=$(printf '%s\n' "${fix_times[@]}" | median)
load3=$(cut -d' ' -f1 /proc/loadavg)
sidecars=$(find "$t/assets" -name '*.asset.json' | wc -l)
hook_lines=$(wc -l <"$t/logs/hooks/history.jsonl")
# Clean up the runs of the previous invocation only now, after measuring.
[[ -n $stale ]] && rm -rf $stale
find "$BENCH_DIR/copy-runs" -mindepth 1 -maxdepth 1 ! -name "$$-*" -exec rm -rf {} + 2>/dev/null || true

# ---------------------------------------------------------------- 4. hooks tail vs tail ----------
if [[ ! -f $HISTORY ]] || [[ $(wc -l <"$HISTORY") -ne $HISTORY_LINES ]]; then
  mkdir -p "$(dirname "$HISTORY")"
  python3 - "$HISTORY" "$HISTORY_LINES" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
events = ["on_scene_enter", "on_choice_render", "on_asset_registered", "on_asset_meta_updated"]
with open(path + ".tmp", "w") as f:
    for i in range(1, n + 1):
        env = {"seq": i, "event": events[i % 4], "ts": 1764300000 + i / 1000,
               "data": {"scene_id": f"scene_{i % 997}", "pov": "alice", "n": i}}
        f.write(json.dumps(env, separators=(",", ":")) + "\n")
import os; os.replace(path + ".tmp", path)
PY
fi
wait_quiet
run_tail() { tail -n 10 "$HISTORY"; }
run_hooks_tail() { "$BIN" --root "$HROOT" hooks tail -n 10; }
read -r tail_base tail_ours < <(paired 30 run_tail run_hooks_tail)

# ---------------------------------------------------------------- 5. small-file re-audit ---------
rm -rf "$SMALL/cache" "$SMALL/logs"
"$BIN" --root "$SMALL" audit >/dev/null || true
sleep 2.1
"$BIN" --root "$SMALL" audit >/dev/null || true # settles the cache
wait_quiet
small_warnings=$("$BIN" --root "$SMALL" audit | tail -1 | sed -E 's/.* ([0-9]+) warnings? .*/\1/' || true)
run_find() { find "$SMALL/assets" -printf '%s %T@ %i\n' >/dev/null; }
run_small_reaudit() { "$BIN" --root "$SMALL" audit >/dev/null; }
read -r small_find small_reaudit < <(paired "$RUNS" run_find run_small_reaudit)
small_rss=$(peak_rss_mb "$BIN" --root "$SMALL" audit)
load5=$(cut -d' ' -f1 /proc/loadavg)

# ---------------------------------------------------------------- 6. serve over the small tree ---
serve_rss="-" serve_hwm="-" q_p99="-" health_p99="-"
if command -v wrk >/dev/null; then
  log=$(mktemp)
  COMFYVN_RUNTIME_ROOT=$SMALL "$BIN" -q serve --bind 127.0.0.1:0 --no-watch 2>"$log" &
  serve_pid=$!
  addr=""
  for _ in $(seq 1 600); do
    addr=$(grep -o 'listening on http://[^ ]*' "$log" | head -1 | sed 's|listening on http://||' || true)
    [[ -n $addr ]] && break
    sleep 0.1
  done
  if [[ -n $addr ]]; then
    curl -sf "http://$addr/assets?q=line_0001&limit=1" >/dev/null || true # the index is built
    serve_rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$serve_pid/status")
    p99_of() {
      wrk -t1 -c4 -d5s --latency "$1" | awk '$1 == "99%" {v = $2
        if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        printf "%.2f", v}'
    }
    wait_quiet
    health_p99=$(p99_of "http://$addr/health")
    q_p99=$(p99_of "http://$addr/assets?q=line_04")
    serve_hwm=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$serve_pid/status")
  else
    echo "serve did not start: $(cat "$log")" >&2
  fi
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  rm -f "$log"
fi

# ---------------------------------------------------------------- report -------------------------
# Every target with its figure, the baseline measured in this run, the ratio and a verdict.
serve_verdict=SKIPPED
[[ $q_p99 != - ]] && serve_verdict=$(verdict "$q_p99 <= 20 and $serve_hwm <= 120")
cat <<EOF

comfyvn-obs registry/audit benchmark: $FILES files (+ $SMALL_FILES small), medians of $RUNS runs, $(nproc) cores
(1-minute load average after phases 1/2/3/5: $load1 / $load2 / $load3 / $load5)
  SHA-256 limit, $(python3 -c "print('%.0f' % ($hashed_bytes / 1e6))") MB at $(python3 -c "print('%.0f' % ($sha_core / 1e6))") MB/s x $(nproc) cores   ${sha_limit} s
  audit --full                   ${full} s   cpu ${full_cpu} s   ratio $(ratio "$full" "$sha_limit")x the limit (target <= 1.3x)  $(verdict "$full / $sha_limit <= 1.3")
  sha256sum -c manifest          ${sha} s   (audit --full $(ratio "$sha" "$full")x faster; for reference)
  re-audit, nothing changed      ${reaudit} s   cpu ${reaudit_cpu} s   peak RSS ${rss} MB (target <= 0.2 s, <= 100 MB)  $(verdict "$reaudit <= 0.2 and $rss <= 100")
  cp -r of $FILES sidecars + sync  ${copy} s
  first audit --fix after sync   ${fix} s   ${sidecars} sidecars, ${hook_lines} hook lines, ratio $(ratio "$fix" "$copy")x the copy (target <= 1.5 s)  $(verdict "$fix <= 1.5")
  tail -n 10, 1M-line history    ${tail_base} s
  hooks tail -n 10               ${tail_ours} s   ratio $(ratio "$tail_ours" "$tail_base")x (target <= 2x)  $(verdict "$tail_ours / $tail_base <= 2")
  find -printf, $SMALL_FILES small files and sidecars  ${small_find} s
  re-audit, $SMALL_FILES small files, $small_warnings warnings  ${small_reaudit} s   ratio $(ratio "$small_reaudit" "$small_find")x find   peak RSS ${small_rss} MB (target <= 0.5 s, <= 150 MB)  $(verdict "$small_reaudit <= 0.5 and $small_rss <= 150")
  serve, $SMALL_FILES assets, GET /health p99     ${health_p99} ms
  serve, $SMALL_FILES assets, GET /assets?q= p99  ${q_p99} ms   RSS ${serve_rss} MB after start, ${serve_hwm} MB peak (target <= 20 ms, <= 120 MB)  $serve_verdict
EOF
