#!/usr/bin/env python3
"""A local receiver of venueql's critical alerts (README, "Audit and alerts").

Listens on 127.0.0.1:PORT, checks each alert's Venueql-Signature with
ALERT_WEBHOOK_SECRET (t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">, five
minutes' tolerance) and prints each verified alert as one JSON line. An alert with a bad
or missing signature is refused with 400 and reported on standard error.

    ALERT_WEBHOOK_SECRET=dev-secret python3 scripts/alert-receiver.py 9099
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ.get("ALERT_WEBHOOK_SECRET", "").encode()
TOLERANCE_SECS = 300


def signature_holds(header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts or not parts["t"].isdigit():
        return False
    if abs(time.time() - int(parts["t"])) > TOLERANCE_SECS:
        return False
    expected = hmac.new(SECRET, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if SECRET and not signature_holds(self.headers.get("venueql-signature", ""), body):
            print("refused an alert with a bad signature", file=sys.stderr, flush=True)
            self.send_response(400)
            self.end_headers()
            return
        print(json.dumps(json.loads(body)), flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9099
    if not SECRET:
        print("ALERT_WEBHOOK_SECRET is not set: signatures are not checked", file=sys.stderr)
    HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
