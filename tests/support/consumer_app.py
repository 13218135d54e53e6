"""A consumer of one secret, for the guarded-rotation test (tests/it/guarded.rs).

It loads the secret's AWSCURRENT value from Secrets Manager (moto) at start and again only when
told to (GET /reload, what a restart hook calls). Requests to /api must carry the value it last
loaded; a client loop inside it reads AWSCURRENT every 100 ms and calls /api with it, as the
service's real clients would after a rotation. So a rotation it is not restarted for makes
auth_failures_total climb. /health answers {"checks": {"auth": "ok"|"failing"}} from the last
client call (503 when failing, or when /break was called); /metrics is Prometheus text.
Usage: consumer_app.py PORT ENDPOINT SECRET_ID
"""
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

PORT, ENDPOINT, SECRET_ID = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sm = boto3.client("secretsmanager", endpoint_url=ENDPOINT, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
lock = threading.Lock()
state = {"value": None, "failures": 0, "ok": 0, "last_ok": True, "broken": False, "reloads": 0}


def current():
    return sm.get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")["SecretString"]


def reload():
    v = current()
    with lock:
        state["value"] = v
        state["reloads"] += 1


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api":
            with lock:
                good = self.headers.get("authorization") == state["value"]
                state["ok" if good else "failures"] += 1
                state["last_ok"] = good
            return self.answer(200 if good else 401, "{}")
        if path == "/health":
            with lock:
                ok = state["last_ok"] and not state["broken"]
            return self.answer(200 if ok else 503,
                               json.dumps({"checks": {"auth": "ok" if ok else "failing"}}))
        if path == "/metrics":
            with lock:
                text = ("# TYPE auth_failures_total counter\nauth_failures_total %d\n"
                        "# TYPE app_reloads_total counter\napp_reloads_total %d\n"
                        % (state["failures"], state["reloads"]))
            return self.answer(200, text, "text/plain; version=0.0.4")
        if path == "/reload":
            reload()
            return self.answer(200, "{}")
        if path in ("/break", "/mend"):
            with lock:
                state["broken"] = path == "/break"
            return self.answer(200, "{}")
        return self.answer(404, "{}")


def client():
    while True:
        try:
            req = urllib.request.Request("http://127.0.0.1:%d/api" % PORT,
                                         headers={"authorization": current()})
            urllib.request.urlopen(req, timeout=2).read()
        except Exception:
            pass
        time.sleep(0.1)


reload()
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
threading.Thread(target=client, daemon=True).start()
print("ready", flush=True)
server.serve_forever()
