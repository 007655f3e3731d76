#!/usr/bin/env python3
"""test/webhook_receiver.py -- a Standard Webhooks receiver for payflow's tests.

It verifies every delivery's signature on its own, with Python's hmac and
base64 (not payflow's code): each "v1,<base64>" entry of webhook-signature
is compared in constant time with HMAC-SHA256 over "id.timestamp.body",
keyed with the base64 after "whsec_" of each secret it was given.  Every
request is appended to a journal (one JSON object per line, flushed at
once) with what was verified and what was answered.

On request it answers 5xx, answers slowly, or does not answer in time:

    POST /admin/config  {"secrets": ["whsec_..."], "status": 200,
                         "delay_ms": 0, "fail_next": 0}
        secrets:   the secrets a signature may be made with
        status:    the status of every answer (e.g. 503 to fail them all)
        delay_ms:  wait this long before answering (a timeout when it is
                   longer than payflow.http_timeout)
        fail_next: answer 500 to the next N deliveries, then "status"
    GET /admin/health   "ok"

    webhook_receiver.py --port PORT --journal FILE [--secret whsec_...]
"""
import argparse
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300   # both reference libraries accept 5 minutes either way

lock = threading.Lock()
config = {"secrets": [], "status": 200, "delay_ms": 0, "fail_next": 0}
journal = None


def key_of(secret):
    return base64.b64decode(secret[len("whsec_"):], validate=True)


def verify(msg_id, timestamp, body, header):
    """Which of the configured secrets signed this, by index (a list)."""
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    with lock:
        secrets = list(config["secrets"])
    matched = []
    entries = header.split(" ")
    for i, secret in enumerate(secrets):
        expected = base64.b64encode(hmac.new(key_of(secret), signed, hashlib.sha256).digest())
        for entry in entries:
            version, _, signature = entry.partition(",")
            if version == "v1" and hmac.compare_digest(signature.encode(), expected):
                matched.append(i)
                break
    return matched


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"    # keep-alive, as payflow's libcurl reuses connections
    disable_nagle_algorithm = True   # headers and body go in two writes

    def log_message(self, *args):
        pass

    def answer(self, status, text=""):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/admin/health":
            self.answer(200, "ok")
        else:
            self.answer(404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/admin/config":
            with lock:
                config.update(json.loads(body))
            self.answer(200, "ok")
            return
        received = time.time()
        msg_id = self.headers.get("webhook-id")
        timestamp = self.headers.get("webhook-timestamp")
        header = self.headers.get("webhook-signature")
        record = {"path": self.path, "msg_id": msg_id, "timestamp": timestamp,
                  "received_at": received, "signatures": 0, "matched": [],
                  "verified": False, "content_type": self.headers.get("Content-Type"),
                  "body_sha256": hashlib.sha256(body).hexdigest()}
        if msg_id and timestamp and header:
            record["signatures"] = len(header.split(" "))
            record["matched"] = verify(msg_id, timestamp, body, header)
            fresh = timestamp.isdigit() and abs(received - int(timestamp)) <= TOLERANCE_S
            record["verified"] = fresh and len(record["matched"]) > 0
        try:
            payload = json.loads(body)
            record["type"] = payload.get("type")
            record["event_id"] = payload.get("data", {}).get("event_id")
        except ValueError:
            record["type"] = None
        with lock:
            delay_ms = config["delay_ms"]
            if config["fail_next"] > 0:
                config["fail_next"] -= 1
                status = 500
            else:
                status = config["status"]
        if not record["verified"]:
            status = 401
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        record["answered"] = status
        try:
            self.answer(status, "thanks" if status < 300 else "no")
        except OSError:
            record["answered"] = "disconnected"
        with lock:
            journal.write(json.dumps(record) + "\n")
            journal.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024   # payflow opens up to payflow.concurrency connections at once


def main():
    global journal
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--secret", action="append", default=[])
    args = parser.parse_args()
    config["secrets"] = args.secret
    journal = open(args.journal, "a", encoding="utf-8")
    server = Server(("127.0.0.1", args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
