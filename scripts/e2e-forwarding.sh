#!/usr/bin/env bash
# End-to-end: crash uploads to a real Sentry-compatible server, and OTLP log export to a real
# OpenTelemetry collector.
#
# Installs Bugsink from PyPI into a venv (single process, SQLite, loopback only), creates a team, a
# project and its DSN through Bugsink's own API, points a temp comfyvn-obs root at it, and reads back
# through the API what arrived: exception types, frames, the fingerprint grouping repeats into one
# issue, scrubbed values absent. Fault cases: the server down while crashes are written (all arrive
# afterwards, each once), `kill -9` of an upload mid-way, consent withdrawn while dumps are queued.
# Then the `rotel` collector from its PyPI wheel receives `export run`'s OTLP/HTTP protobuf records;
# its debug log shows the records (hook events and crash dumps), attributes and resource attributes. Fault cases: the collector down
# while 1,000 events are emitted (all arrive, each once), `kill -9` of the exporter mid-way; gzip bodies.
#
# Usage: scripts/e2e-forwarding.sh            (builds target/debug/comfyvn-obs if needed)
# Env:   COMFYVN_BIN      the binary to test
#        E2E_VENV         venv for the servers (default /tmp/comfyvn-e2e-venv; reused when present)
#        OUTAGE_SECS      how long the server is down in the outage case (default 30)
#        OUTAGE_CRASHES   crashes written during the outage (default 100)
# Prints "N passed, N failed" last; exits non-zero on any failure.

set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${COMFYVN_BIN:-$here/target/debug/comfyvn-obs}"
venv="${E2E_VENV:-/tmp/comfyvn-e2e-venv}"
outage_secs="${OUTAGE_SECS:-30}"
outage_crashes="${OUTAGE_CRASHES:-100}"
bugsink_version="2.6.2"
rotel_version="0.0.1a15"

if [[ ! -x "$bin" ]]; then
    (cd "$here" && cargo build --quiet)
fi
if [[ ! -x "$venv/bin/bugsink-manage" ]] || ! "$venv/bin/python" -c 'import rotel' 2>/dev/null; then
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "bugsink==$bugsink_version" "rotel==$rotel_version"
fi
rotel_bin="$("$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"

work="$(mktemp -d /tmp/comfyvn-e2e.XXXXXX)"
server_pid=""
rotel_pid=""
export_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [[ -n "$rotel_pid" ]]; then kill "$rotel_pid" 2>/dev/null || true; wait "$rotel_pid" 2>/dev/null || true; fi
    if [[ -n "$export_pid" ]]; then kill "$export_pid" 2>/dev/null || true; wait "$export_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() { # check NAME COMMAND...
    local name="$1"; shift
    if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
bs="$work/bugsink"
mkdir -p "$bs"
export DJANGO_SETTINGS_MODULE=bugsink_conf PYTHONPATH="$bs"
(cd "$bs" && "$venv/bin/bugsink-create-conf" --template=local --host=127.0.0.1 --port="$port" -o bugsink_conf.py >/dev/null)
(cd "$bs" && "$venv/bin/bugsink-manage" migrate --no-input >/dev/null && \
    "$venv/bin/bugsink-manage" migrate snappea --database=snappea --no-input >/dev/null)
token="$(cd "$bs" && "$venv/bin/bugsink-manage" create_auth_token | tail -n 1)"

start_server() {
    (cd "$bs" && exec "$venv/bin/gunicorn" --bind "127.0.0.1:$port" --workers 1 --threads 4 bugsink.wsgi >>"$bs/server.log" 2>&1) &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "$base/health/ready" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bugsink did not start; its log:" >&2; cat "$bs/server.log" >&2; return 1
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

api() { # api METHOD PATH [JSON]
    curl -fsS -X "$1" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' ${3:+-d "$3"} "$base/api/canonical/0/$2"
}
py() { "$venv/bin/python" -c "$@"; }

start_server
team="$(api POST teams/ '{"name": "studio"}' | py 'import json,sys; print(json.load(sys.stdin)["id"])')"
project="$(api POST projects/ "{\"name\": \"comfyvn\", \"team\": \"$team\"}" | py 'import json,sys; print(json.load(sys.stdin)["id"])')"
dsn="$(api GET "projects/$project/" | py 'import json,sys; print(json.load(sys.stdin)["dsn"])')"
echo "bugsink $bugsink_version on $base, project $project, DSN $dsn"

root="$work/root"
mkdir -p "$root/config"
config() { # config TELEMETRY_OPT_IN
    cat >"$root/config/comfyvn.json" <<EOF
{"features": {"enable_observability": true, "enable_crash_uploader": true},
 "telemetry": {"telemetry_opt_in": $1, "crash_opt_in": true, "dry_run": false},
 "obs": {"crash_upload": {"dsn": "$dsn", "environment": "e2e", "retry_schedule_ms": [200, 500, 1000]}}}
EOF
}
obs() { COMFYVN_RUNTIME_ROOT="$root" RUST_BACKTRACE=1 "$bin" "$@"; }
traceback='Traceback (most recent call last):
  File "/studio/app.py", line 12, in <module>
    main()
  File "/usr/lib/python3.12/json/__init__.py", line 346, in loads
  File "/studio/scene.py", line 40, in load
    raise ValueError("bad scene")
ValueError: bad scene 42'
capture() { # capture MESSAGE
    printf '%s\n' "$traceback" | obs crash capture --message "$1" --context plugin=asset_sync \
        --context api_token=hunter2hunter2 --traceback-file - 2>/dev/null
}
# Upload until nothing is left (a background upload may hold the lock for a moment).
upload_all() {
    for _ in $(seq 1 100); do
        if obs crash upload --all >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}
issues_json() { api GET "issues/?project=$project"; }

# --- 1. Two repeats of one crash and a panic ------------------------------------------------------
config true
capture "bad scene 42"
capture "bad scene 42"
obs crash simulate >/dev/null 2>&1 || true
check "crash upload sends every dump" upload_all
listing="$(obs crash list --json)"
check "crash list shows the server's event ids" py '
import json,sys
dumps = json.loads(sys.argv[1])
sys.exit(0 if len(dumps) == 3 and all(d["upload"]["state"] == "uploaded" and d["upload"]["server_event_id"] for d in dumps) else 1)
' "$listing"

issues="$(issues_json)"
check "repeats of one crash group into one issue, the panic into another" py '
import json,sys
issues = {i["calculated_type"]: i for i in json.loads(sys.argv[1])["results"]}
ok = set(issues) == {"ValueError", "panic"} and issues["ValueError"]["digested_event_count"] == 2 \
    and issues["panic"]["digested_event_count"] == 1
sys.exit(0 if ok else 1)
' "$issues"

value_issue="$(py 'import json,sys; print([i["id"] for i in json.loads(sys.argv[1])["results"] if i["calculated_type"] == "ValueError"][0])' "$issues")"
panic_issue="$(py 'import json,sys; print([i["id"] for i in json.loads(sys.argv[1])["results"] if i["calculated_type"] == "panic"][0])' "$issues")"
event_of() { # event_of ISSUE -> the stored event data of its first event
    local id
    id="$(api GET "events/?issue=$1" | py 'import json,sys; print(json.load(sys.stdin)["results"][0]["id"])')"
    api GET "events/$id/"
}
value_event="$(event_of "$value_issue")"
panic_event="$(event_of "$panic_issue")"
fp="$(py 'import json,sys; print([d for d in json.loads(sys.argv[1]) if d["exc_type"] == "ValueError"][0]["fingerprint"])' "$listing")"

check "python event: type, value, frames in order, library frame not in-app, fingerprint" py '
import json,sys
d = json.loads(sys.argv[1])["data"]; fp = sys.argv[2]
e = d["exception"]["values"][0]
frames = [(f["filename"], f["function"], f["lineno"], f["in_app"]) for f in e["stacktrace"]["frames"]]
ok = e["type"] == "ValueError" and e["value"] == "bad scene 42" and d["fingerprint"] == [fp] \
    and frames == [("app.py", "<module>", 12, True), ("__init__.py", "loads", 346, False), ("scene.py", "load", 40, True)] \
    and d["environment"] == "e2e" and d["tags"]["plugin"] == "asset_sync" and d["user"]["id"]
sys.exit(0 if ok else 1)
' "$value_event" "$fp"
check "scrubbed values never reach the server" py '
import sys
sys.exit(1 if "hunter2" in sys.argv[1] or "hunter2" in sys.argv[2] else 0)
' "$value_event" "$panic_event"
check "panic event: rust frames with in-app marked, fatal level" py '
import json,sys
d = json.loads(sys.argv[1])["data"]
e = d["exception"]["values"][0]
frames = e["stacktrace"]["frames"]
in_app = [f["function"] for f in frames if f.get("in_app")]
ok = e["type"] == "panic" and d["level"] == "fatal" and d["platform"] == "native" \
    and any(f.startswith("comfyvn_obs::commands::crash::") for f in in_app) \
    and not any(f.get("in_app") and f["function"].startswith("std::") for f in frames)
sys.exit(0 if ok else 1)
' "$panic_event"

# --- 2. The server down while crashes are written -------------------------------------------------
stop_server
outage_started=$SECONDS
for i in $(seq 1 "$outage_crashes"); do
    obs crash capture --message "outage crash $i" >/dev/null 2>&1
done
obs crash upload --all >/dev/null 2>&1 && down_rc=0 || down_rc=$?
check "with the server down, crash upload says the dumps are queued (exit 1)" test "$down_rc" -eq 1
while (( SECONDS - outage_started < outage_secs )); do sleep 1; done
start_server
check "after the outage every dump arrives" upload_all
check "each of the $outage_crashes outage crashes is on the server exactly once" py '
import json,sys,urllib.request
base, token, project, n = sys.argv[1:5]
def get(url):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    return json.load(urllib.request.urlopen(req))
issues = get(f"{base}/api/canonical/0/issues/?project={project}")["results"]
outage = [i for i in issues if i["calculated_value"].startswith("outage crash")]
total = sum(i["digested_event_count"] for i in outage)
sys.exit(0 if total == int(n) else 1)
' "$base" "$token" "$project" "$outage_crashes"

# --- 3. kill -9 in the middle of an upload --------------------------------------------------------
stop_server
for i in $(seq 1 30); do obs crash capture --message "killed upload $i" >/dev/null 2>&1; done
start_server
COMFYVN_RUNTIME_ROOT="$root" "$bin" crash upload --all >/dev/null 2>&1 &
upload_pid=$!
sleep 0.3
kill -9 "$upload_pid" 2>/dev/null || true
wait "$upload_pid" 2>/dev/null || true
check "after kill -9 a new upload finishes the rest" upload_all
check "every killed-upload dump arrived, at most one twice (the one in flight)" py '
import json,sys,urllib.request
base, token, project = sys.argv[1:4]
req = urllib.request.Request(f"{base}/api/canonical/0/issues/?project={project}", headers={"Authorization": "Bearer " + token})
issues = json.load(urllib.request.urlopen(req))["results"]
total = sum(i["digested_event_count"] for i in issues if i["calculated_value"].startswith("killed upload"))
sys.exit(0 if 30 <= total <= 31 else 1)
' "$base" "$token" "$project"

# --- 4. Consent withdrawn while dumps are queued --------------------------------------------------
stop_server
obs crash capture --message "withdrawn consent" >/dev/null 2>&1
obs crash upload --all >/dev/null 2>&1 || true
config false
# A background upload started by the capture above may still hold the uploader lock; it reads consent
# again before each upload, so it discards too. Ask until the queue is empty.
for _ in $(seq 1 50); do
    obs crash upload --all >/dev/null 2>&1 || true
    [[ "$(obs crash list --json | py 'import json,sys; print(next(d["upload"]["state"] for d in json.load(sys.stdin) if d["message"] == "withdrawn consent"))')" == discarded ]] && break
    sleep 0.2
done
check "withdrawing consent discards the queued dump" test "$(obs crash list --json | py 'import json,sys; print(next(d["upload"]["state"] for d in json.load(sys.stdin) if d["message"] == "withdrawn consent"))')" == discarded
config true
start_server
upload_all || true
check "the discarded dump is never sent" py '
import json,sys,urllib.request
base, token, project = sys.argv[1:4]
req = urllib.request.Request(f"{base}/api/canonical/0/issues/?project={project}", headers={"Authorization": "Bearer " + token})
issues = json.load(urllib.request.urlopen(req))["results"]
sys.exit(1 if any(i["calculated_value"] == "withdrawn consent" for i in issues) else 0)
' "$base" "$token" "$project"

stop_server

# --- 5. OTLP export to the rotel collector --------------------------------------------------------
free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
otlp_port="$(free_port)"
grpc_port="$(free_port)"
rotel_log="$work/rotel.log"
start_rotel() {
    "$rotel_bin" start --otlp-http-endpoint "127.0.0.1:$otlp_port" --otlp-grpc-endpoint "127.0.0.1:$grpc_port" \
        --exporter blackhole --debug-log logs --debug-log-verbosity detailed --log-file "$work/rotel-agent.log" \
        >>"$rotel_log" 2>&1 &
    rotel_pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$otlp_port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "rotel did not start; its log:" >&2; cat "$rotel_log" >&2; return 1
}
stop_rotel() { kill "$rotel_pid"; wait "$rotel_pid" 2>/dev/null || true; rotel_pid=""; }
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_port" OTEL_RESOURCE_ATTRIBUTES="deployment.environment=e2e"
emit_many() { # emit_many FROM TO: hook events with scene_id sFROM … sTO, one process each
    for i in $(seq "$1" "$2"); do obs hooks emit on_scene_enter --data "{\"scene_id\": \"s$i\", \"node\": $i}" >/dev/null; done
}
seqs_received() { grep -o -- '-> seq: Int([0-9]*)' "$rotel_log" | grep -o '[0-9]*' || true; }
history_seqs() { # the seqs of on_scene_enter events in the history
    cat "$root"/logs/hooks/history.jsonl* 2>/dev/null | py '
import json,sys
for line in sys.stdin:
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("event") == "on_scene_enter": print(e["seq"])'
}
start_rotel
emit_many 1 50
check "export run --once exports the history to the collector" obs export run --once
sleep 1
check "the collector received each of the 50 records once" test "$(seqs_received | sort -n | uniq | wc -l)" -eq 50 -a "$(seqs_received | wc -l)" -eq 50
check "records carry event.name, data attributes and the time" \
    grep -q -- '-> event.name: Str(on_scene_enter)' "$rotel_log"
check "data fields arrive as attributes" grep -q -- '-> data.scene_id: Str(s7)' "$rotel_log"
check "crash dumps arrive as records with the exception attributes" bash -c '
grep -q -- "-> exception.type: Str(ValueError)" "$1" && grep -q -- "-> exception.type: Str(panic)" "$1" &&
grep -q -- "-> exception.message: Str(bad scene 42)" "$1" && grep -q -- "-> exception.stacktrace: Str(" "$1" &&
grep -q "SeverityNumber: SEVERITY_NUMBER_FATAL" "$1"' _ "$rotel_log"
check "run.log records arrive with severity, body and fields (the uploader's outage warnings)" bash -c '
grep -q "Body: Str(crash upload failed; the server looks down)" "$1" && grep -q "SeverityText: WARN" "$1" &&
grep -q -- "-> log.run: Str(run-" "$1"' _ "$rotel_log"
check "resource attributes: service.name, service.version, host.name, process.pid, OTEL_RESOURCE_ATTRIBUTES" bash -c '
grep -q -- "-> service.name: Str(comfyvn-obs)" "$1" && grep -q -- "-> service.version: Str(" "$1" &&
grep -q -- "-> host.name: Str(" "$1" && grep -q -- "-> process.pid: Int(" "$1" &&
grep -q -- "-> deployment.environment: Str(e2e)" "$1"' _ "$rotel_log"

# The collector down while 1,000 events are emitted: all arrive afterwards, none twice.
stop_rotel
COMFYVN_RUNTIME_ROOT="$root" "$bin" export run >/dev/null 2>&1 &
export_pid=$!
emit_many 51 1050
sleep 2
start_rotel
for _ in $(seq 1 300); do
    [[ "$(obs export status --json | py 'import json,sys; print(json.load(sys.stdin)["lag"])')" == 0 ]] && break
    sleep 0.2
done
kill "$export_pid"; wait "$export_pid" 2>/dev/null || true; export_pid=""
sleep 1
expected="$(history_seqs | sort -n | uniq)"
check "after the collector outage all 1,050 records arrived" test "$(seqs_received | sort -n | uniq)" == "$expected"
check "and none twice" test "$(seqs_received | wc -l)" -eq "$(seqs_received | sort -n | uniq | wc -l)"

# kill -9 of the exporter mid-way, then a restart: every record arrives; at most the batch in flight
# (obs.otlp.batch_size) twice.
emit_many 1051 1600
COMFYVN_RUNTIME_ROOT="$root" "$bin" export run >/dev/null 2>&1 &
export_pid=$!
sleep 0.2
kill -9 "$export_pid" 2>/dev/null || true; wait "$export_pid" 2>/dev/null || true; export_pid=""
check "after kill -9 export run --once finishes the rest" obs export run --once
sleep 1
expected="$(history_seqs | sort -n | uniq)"
check "every record arrived after kill -9" test "$(seqs_received | sort -n | uniq)" == "$expected"
dups=$(( $(seqs_received | wc -l) - $(seqs_received | sort -n | uniq | wc -l) ))
check "at most one batch ($dups records) arrived twice" test "$dups" -le 512

# gzip-compressed request bodies (OTEL_EXPORTER_OTLP_COMPRESSION=gzip), as the collector decodes them.
emit_many 1601 1650
check "export run --once with gzip bodies" env OTEL_EXPORTER_OTLP_COMPRESSION=gzip COMFYVN_RUNTIME_ROOT="$root" "$bin" export run --once
sleep 1
expected="$(history_seqs | sort -n | uniq)"
check "the collector decoded every gzip-compressed record" test "$(seqs_received | sort -n | uniq)" == "$expected"
check "data fields of gzip-compressed records arrive as attributes" grep -q -- '-> data.scene_id: Str(s1650)' "$rotel_log"
stop_rotel

echo "e2e-forwarding: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
