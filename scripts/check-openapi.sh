#!/usr/bin/env bash
# Check the served /openapi.json against independent tools. Used by .ci/run after the build; needs python3.
#
#   1. openapi-spec-validator: the document is valid OpenAPI 3.1.
#   2. schemathesis (pinned below) with `--checks all`: requests generated from the document, valid and
#      invalid, and every answer checked against it (status, content type, schema, each SSE event, Allow
#      headers, 405s). The few refusals no schema can state are listed, with their reasons, in
#      scripts/schemathesis.toml. Bounded: about a minute on 2 cores, killed after CHECK_OPENAPI_TIMEOUT
#      seconds (a failure).
#
# The tools are installed with pip when missing; when pip cannot install them (no network), the check
# says so and skips: that is not a fault of the document. The server and schemathesis run in a network
# namespace of their own when one can be made (root, `unshare`, `ip`): webhook URLs that the fuzzer
# registers then lead nowhere but loopback. Without one, webhook registration is left out of the run.
#
#   ST_SEED=7 bash scripts/check-openapi.sh      # another seed (default 1, so a CI failure replays)
#   ST_EXAMPLES=100 bash scripts/check-openapi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug/comfyvn-obs}
SCHEMATHESIS_VERSION=4.32.5
ST_SEED=${ST_SEED:-1}
ST_EXAMPLES=${ST_EXAMPLES:-15}
CHECK_OPENAPI_TIMEOUT=${CHECK_OPENAPI_TIMEOUT:-150}

if [[ -z ${CHECK_OPENAPI_NETNS:-} ]]; then
  has() { python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }
  if ! python3 -c 'import openapi_spec_validator' 2>/dev/null \
    && ! python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator >/dev/null 2>&1; then
    echo "check-openapi: openapi-spec-validator could not be installed; skipped"
    exit 0
  fi
  if ! has schemathesis "$SCHEMATHESIS_VERSION" \
    && ! python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >/dev/null 2>&1; then
    echo "check-openapi: schemathesis $SCHEMATHESIS_VERSION could not be installed; skipped"
    exit 0
  fi
  if command -v unshare >/dev/null && command -v ip >/dev/null && unshare --net true 2>/dev/null; then
    exec unshare --net env CHECK_OPENAPI_NETNS=1 bash "$0" "$@"
  fi
  CHECK_OPENAPI_NETNS=none
fi
st_extra=()
if [[ $CHECK_OPENAPI_NETNS == 1 ]]; then
  ip link set lo up
else
  echo "check-openapi: no network namespace here; POST /api/modder/hooks/webhooks is left out of the schemathesis run"
  st_extra+=(--exclude-name "POST /api/modder/hooks/webhooks")
fi

root=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$root"' EXIT
COMFYVN_RUNTIME_ROOT=$root "$BIN" serve --bind 127.0.0.1:0 --no-watch 2>"$root/serve.err" &
pid=$!
for _ in $(seq 100); do
  addr=$(sed -n 's#^listening on http://##p' "$root/serve.err" | head -1)
  [[ -n $addr ]] && break
  sleep 0.1
done
[[ -n ${addr:-} ]] || { echo "check-openapi: serve did not start"; cat "$root/serve.err"; exit 1; }
python3 - "http://$addr/openapi.json" <<'PY'
import json, sys, urllib.request
from openapi_spec_validator import validate
doc = json.load(urllib.request.urlopen(sys.argv[1]))
validate(doc)
print(f"check-openapi: /openapi.json is a valid OpenAPI {doc['openapi']} document ({len(doc['paths'])} paths)")
PY

# Run from the temp folder, with no example database: nothing is left in the work tree.
st=$(python3 -c 'import sys, os; print(os.path.join(os.path.dirname(sys.executable), "st"))')
command -v "$st" >/dev/null || st=st
status=0
(cd "$root" && timeout "$CHECK_OPENAPI_TIMEOUT" "$st" --no-color --config-file "$OLDPWD/scripts/schemathesis.toml" run \
  "http://$addr/openapi.json" --checks all --max-examples "$ST_EXAMPLES" --seed "$ST_SEED" \
  --request-timeout 5 --generation-database none "${st_extra[@]}") >"$root/st.out" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
  cat "$root/st.out"
  [[ $status -eq 124 ]] && echo "check-openapi: schemathesis did not finish within ${CHECK_OPENAPI_TIMEOUT}s"
  echo "check-openapi: schemathesis found failures (seed $ST_SEED); replay with ST_SEED=$ST_SEED bash scripts/check-openapi.sh"
  exit 1
fi
summary=$(grep -E '^ *[0-9]+ generated' "$root/st.out" | head -1 | sed 's/^ *//')
echo "check-openapi: schemathesis $SCHEMATHESIS_VERSION --checks all: $summary (seed $ST_SEED)"
