#!/usr/bin/env python3
"""Loopback webhook receiver for benches/soak.sh: answers 204 and appends each request's
webhook-id to a file. Started and killed by the soak script to simulate a receiver going down."""
import http.server
import sys

port, out = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with open(out, "a") as f:
            f.write(self.headers.get("webhook-id", "") + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
