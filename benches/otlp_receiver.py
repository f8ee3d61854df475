"""A loopback OTLP/HTTP logs receiver for benches/otlp.sh: decodes each request with the official
`opentelemetry-proto` package and records, per log record, the delay from its time to its arrival.

Usage: otlp_receiver.py PORT_FILE EXPECTED TIMEOUT_S  -> prints {"received", "unique_seqs", "p50_ms",
"p95_ms", "max_ms"} once EXPECTED records with a `seq` arrived (or the timeout passed)."""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

port_file, expected, timeout_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
delays, seqs = [], set()
lock = threading.Lock()
done = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time()
        req = ExportLogsServiceRequest.FromString(body)
        with lock:
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        seq = next((a.value.int_value for a in r.attributes if a.key == "seq"), None)
                        if seq is not None:
                            seqs.add(seq)
                            delays.append(now - r.time_unix_nano / 1e9)
            if len(seqs) >= expected:
                done.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402

os.rename(port_file + ".tmp", port_file)
threading.Thread(target=server.serve_forever, daemon=True).start()
done.wait(timeout_s)
server.shutdown()
d = sorted(delays)
pct = lambda p: round(d[min(len(d) - 1, int(p * len(d)))] * 1000, 1) if d else None  # noqa: E731
print(json.dumps({"received": len(d), "unique_seqs": len(seqs), "p50_ms": pct(0.5), "p95_ms": pct(0.95),
                  "max_ms": round(d[-1] * 1000, 1) if d else None}))
