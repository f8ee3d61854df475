#!/usr/bin/env bash
# Registry/audit benchmark. Prints medians and ratios against baselines measured
# in the same run:
#   1. `audit --full` vs `sha256sum -c` of a manifest of the same files      target: >= 6x faster
#   2. re-audit with nothing changed (stat-only), median and peak RSS         target: <= 0.2 s, <= 100 MB
#   3. first `audit --fix` on the corpus without sidecars (20,000 sidecars)  target: <= 3 s
#   4. `hooks tail -n 10` on a 1,000,000-line history vs `tail -n 10`        target: <= 3x
#
# The corpus is deterministic (seeded): FILES files of 1-100 KiB (~1 GB for 20,000) in 5 type
# folders, generated once under BENCH_DIR (default /tmp/comfyvn-obs-bench, never in the repo).
# Uses hyperfine when installed, else a loop timed with bash's $EPOCHREALTIME; peak RSS comes from
# /usr/bin/time. Needs python3 (corpus generator), sha256sum and tail.
#
#   benches/audit.sh                 # full run
#   FILES=2000 RUNS=3 benches/audit.sh   # a quick smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/tmp/comfyvn-obs-bench}
FILES=${FILES:-20000}
RUNS=${RUNS:-5}
HISTORY_LINES=${HISTORY_LINES:-1000000}

cargo build --release --quiet
BIN=$PWD/target/release/comfyvn-obs
CORPUS=$BENCH_DIR/corpus-$FILES # asset files only; never holds sidecars
MANIFEST=$CORPUS/manifest.sha256
CLEAN=$BENCH_DIR/clean-$FILES   # hard links to the corpus plus complete, valid sidecars
HROOT=$BENCH_DIR/hooks-root
HISTORY=$HROOT/logs/hooks/history.jsonl
export BIN CLEAN MANIFEST HROOT HISTORY # for the functions hyperfine runs in a child shell
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
  if command -v hyperfine >/dev/null; then
    local json; json=$(mktemp)
    hyperfine --style none --warmup 1 --runs "$runs" -i --export-json "$json" -- "$(printf '%q ' "$@")" >/dev/null 2>&1
    python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$json"
    rm -f "$json"
    return
  fi
  "$@" >/dev/null 2>&1 || true
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

# ---------------------------------------------------------------- report -------------------------
cat <<EOF

comfyvn-obs registry/audit benchmark: $FILES files, medians of $RUNS runs, $(nproc) cores
(1-minute load average after phases 1/2/3: $load1 / $load2 / $load3)
  sha256sum -c manifest          ${sha} s
  audit --full                   ${full} s   cpu ${full_cpu} s   ratio $(ratio "$sha" "$full")x faster (target >= 6x)  $(verdict "$sha / $full >= 6")
  re-audit, nothing changed      ${reaudit} s   cpu ${reaudit_cpu} s   peak RSS ${rss} MB (target <= 0.2 s, <= 100 MB)  $(verdict "$reaudit <= 0.2 and $rss <= 100")
  first audit --fix              ${fix} s   ${sidecars} sidecars, ${hook_lines} hook lines (target <= 3 s)  $(verdict "$fix <= 3")
  tail -n 10, 1M-line history    ${tail_base} s
  hooks tail -n 10               ${tail_ours} s   ratio $(ratio "$tail_ours" "$tail_base")x (target <= 3x)  $(verdict "$tail_ours / $tail_base <= 3")
EOF
