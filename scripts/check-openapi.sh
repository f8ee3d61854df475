#!/usr/bin/env bash
# Validate the served /openapi.json with an independent OpenAPI 3.1 validator (openapi-spec-validator
# from PyPI). Used by .ci/run after the tests; needs python3. When the validator cannot be installed
# (no network), it says so and skips: that is not a fault of the document.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug/comfyvn-obs}
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  if ! python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator >/dev/null 2>&1; then
    echo "check-openapi: openapi-spec-validator could not be installed; skipped"
    exit 0
  fi
fi
root=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$root"' EXIT
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
