"""The payment provider of the kind e2e suite: a stdlib-only HTTP server run in-cluster from
`python:3.11-slim` (mounted from a ConfigMap made of this file), because the full example's
`https://payments.example.com/v1` is not reachable from a kind cluster and the order saga must
charge somewhere for an order to be CONFIRMED.

It answers the API `reference_service.domain.sagas.payments` documents, under any path prefix
(`<url>/charges`, `<url>/refunds`): a charge is made once per `Idempotency-Key` (201, then 200
with the same id), a refund of a key refunds it, or voids a key never charged (a later charge
under it is declined, 402). tests/e2e/test_e2e_files.py runs it locally against the service's
own client.

    python payment_provider.py PORT [HOST]     (HOST defaults to 0.0.0.0, as in a pod)
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHARGES: dict[str, str] = {}
"""Idempotency-Key -> charge id."""
VOIDED: set[str] = set()
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._answer(400, {"error": "body is not JSON"})
            return
        path = self.path.rstrip("/")
        if path.endswith("/charges"):
            self._charge(self.headers.get("Idempotency-Key"), body)
        elif path.endswith("/refunds"):
            self._refund(str(body.get("charge_key", "")))
        else:
            self._answer(404, {"error": f"no route {self.path}"})

    def do_GET(self) -> None:
        self._answer(200, {"status": "ok"})  # readiness

    def _charge(self, key: str | None, body: dict[str, object]) -> None:
        if not key:
            self._answer(400, {"error": "Idempotency-Key required"})
            return
        if not isinstance(body.get("amount_minor"), int):
            self._answer(400, {"error": "amount_minor must be an integer"})
            return
        with LOCK:
            if key in VOIDED:
                self._answer(402, {"error": "voided"})
                return
            existed = key in CHARGES
            charge = CHARGES.setdefault(key, f"ch_{uuid.uuid4().hex[:12]}")
        self._answer(200 if existed else 201, {"id": charge})

    def _refund(self, key: str) -> None:
        with LOCK:
            if CHARGES.pop(key, None) is None:
                VOIDED.add(key)
                self._answer(200, {"status": "voided"})
                return
        self._answer(200, {"status": "refunded"})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    host = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"payment provider on :{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
