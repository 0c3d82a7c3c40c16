#!/usr/bin/env python3
"""Every documented answer, checked against /openapi.json with real data.

schemathesis (schema.py) sends generated input, which seldom gets far enough to create an
order, a subscription, a portal session or a webhook delivery, so the schemas of those answers
would go unchecked. This script walks the seeds' flows on a live server (`serve --dev`, with a
local webhook receiver) and validates every response against the document: the status must be
one the operation documents, the body must match that status's schema, and the documented
headers must be there (when required) and match theirs. It also checks that
the walk reached every documented operation.

    python3 tests/schema/flows.py [--binary PATH]
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import jsonschema_rs
from schema import ROOT, start  # beside this file


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint that answers 200 to everything."""

    def do_POST(self) -> None:  # noqa: N802 (the handler's name is http.server's)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class Walk:
    def __init__(self, base: str, doc: dict) -> None:
        self.base = base
        self.doc = doc
        self.reached: set[tuple[str, str]] = set()
        self.problems: list[str] = []
        self.last_headers: Message = Message()
        self.templates = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
                          for path in doc["paths"]]

    def operation(self, method: str, path: str) -> tuple[str, dict] | None:
        matches = [t for rx, t in self.templates if rx.match(path) and method in self.doc["paths"][t]]
        # A literal segment beats a parameter (`/api/v1/api-keys` before `/{id}`): fewest braces.
        matches.sort(key=lambda t: t.count("{"))
        return (matches[0], self.doc["paths"][matches[0]][method]) if matches else None

    def call(self, method: str, path: str, headers: dict, body: object = None, expect: int | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method.upper(), headers={
            **headers, **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request) as response:
                status, raw, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as refused:
            status, raw, got = refused.code, refused.read(), refused.headers
        answer = json.loads(raw) if raw else None
        self.last_headers = got
        where = f"{method.upper()} {path} -> {status}"
        if expect is not None and status != expect:
            self.problems.append(f"{where}: expected {expect}: {answer}")
        found = self.operation(method, path.split("?")[0])
        if found is None:
            self.problems.append(f"{where}: not in the document")
            return answer or {}
        template, op = found
        self.reached.add((method, template))
        documented = op["responses"].get(str(status))
        if documented is None:
            self.problems.append(f"{where}: status not documented ({sorted(op['responses'])})")
            return answer or {}
        for name, header in documented.get("headers", {}).items():
            value = got.get(name)
            if value is None:
                if header.get("required"):
                    self.problems.append(f"{where}: no {name} header")
                continue
            parsed: object = value
            if header["schema"].get("type") == "integer":
                parsed = int(value) if re.fullmatch(r"-?[0-9]+", value) else value
            for error in jsonschema_rs.Draft202012Validator(header["schema"]).iter_errors(parsed):
                self.problems.append(f"{where}: {name}: {error.message}")
        schema = documented["content"]["application/json"]["schema"]
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": self.doc["components"]})
        for error in validator.iter_errors(answer):
            self.problems.append(f"{where}: {error.message} at {list(error.instance_path)}")
        return answer or {}


def walk(w: Walk, banner: dict, hook_url: str) -> None:
    admin = {"Authorization": f"Bearer {banner['admin token']}"}
    store = banner["store"]
    dev_key = {"X-Api-Key": banner["API key"]}
    s = f"/api/stores/{store}"

    w.call("get", "/healthz", {}, expect=200)
    w.call("get", "/api/meta", admin, expect=200)
    w.call("get", "/api/stores", admin, expect=200)
    w.call("get", s, admin, expect=200)
    w.call("patch", s, admin, {"default_rate_limit": {"limit": 10000, "algorithm": "fixed_window"},
                               "max_scoped_keys": 20, "permissions_editable": True}, expect=200)
    other = w.call("post", "/api/stores", admin, {"name": "Second", "plan": {"tier": "pro", "expires_at": None}},
                   expect=201)
    w.call("patch", f"/api/stores/{other['data']['store']['id']}", admin, {"api_enabled": False}, expect=200)

    # Keys of each format, through the management API.
    created = {}
    for fmt in ("token", "hex", "pair"):
        created[fmt] = w.call("post", f"{s}/api-keys", admin, {
            "name": f"ERP {fmt}", "format": fmt, "permissions": {"Orders": ["View"]},
            "rate_limit": {"limit": 100, "window_seconds": 60, "algorithm": "sliding_window"},
            "ip_allowlist": ["127.0.0.1/32"], "meta": {"team": "ops"}}, expect=201)["data"]
    key_id = created["token"]["id"]
    w.call("get", f"{s}/api-keys", admin, expect=200)
    w.call("get", f"{s}/api-keys/{key_id}", admin, expect=200)
    w.call("patch", f"{s}/api-keys/{key_id}", admin, {"name": "ERP 2", "permissions": ["orders:read"]}, expect=200)
    w.call("post", f"{s}/api-keys/{key_id}/regenerate", admin, expect=200)
    pair = created["pair"]
    basic = base64.b64encode(f"{pair['consumer_key']}:{pair['consumer_secret']}".encode()).decode()
    # A regeneration with an overlap: the replaced consumer secret keeps working beside the new one.
    rolled = w.call("post", f"{s}/api-keys/{pair['id']}/regenerate", admin, {"overlap_seconds": 600},
                    expect=200)["data"]
    if not rolled.get("previous_expires_at"):
        w.problems.append(f"regenerate with an overlap: no previous_expires_at in {rolled}")
    new_basic = base64.b64encode(f"{pair['consumer_key']}:{rolled['consumer_secret']}".encode()).decode()
    w.call("get", "/api/v1/orders", {"Authorization": f"Basic {new_basic}"}, expect=200)
    w.call("get", "/api/v1/orders", {"Authorization": f"Basic {basic}"}, expect=200)
    w.call("get", "/api/v1/packages", {"Authorization": f"Basic {basic}"}, expect=403)
    w.call("delete", f"{s}/api-keys/{created['hex']['id']}", admin, expect=200)
    w.call("get", "/api/v1/orders", {"X-Api-Key": created["hex"]["key"]}, expect=401)

    # Webhooks, delivered to the local receiver.
    hook = w.call("post", f"{s}/webhooks", admin, {"url": hook_url, "events": ["order.created"]},
                  expect=201)["data"]
    w.call("get", f"{s}/webhooks", admin, expect=200)
    w.call("get", f"{s}/webhooks/{hook['id']}", admin, expect=200)
    w.call("patch", f"{s}/webhooks/{hook['id']}", admin, {"events": ["order.created", "api_key.created"]},
           expect=200)
    w.call("post", f"{s}/webhooks/{hook['id']}/test", admin, expect=200)
    # A rotation answers the endpoint with its new secret; the body may be left out.
    rotated = w.call("post", f"{s}/webhooks/{hook['id']}/rotate-secret", admin, {"overlap_seconds": 3600},
                     expect=200)
    if not str((rotated.get("data") or {}).get("secret", "")).startswith("whsec_"):
        w.problems.append(f"rotate-secret answered no new secret: {rotated}")
    w.call("post", f"{s}/webhooks/{hook['id']}/rotate-secret", admin, expect=200)
    w.call("post", f"{s}/webhooks/{hook['id']}/rotate-secret", admin, {"overlap_seconds": -1}, expect=400)

    # The store's entities, with the default key.
    category = w.call("post", "/api/v1/categories", dev_key, {"name": "Ranks", "description": "d"},
                      expect=201)["data"]
    package = w.call("post", "/api/v1/packages", dev_key, {
        "name": "VIP", "price": {"amount": 500, "currency": "usd"}, "category_id": category["id"],
        "type": "subscription"}, expect=201)["data"]
    single = w.call("post", "/api/v1/packages", dev_key, {"name": "Crate", "price": {"amount": 200, "currency": "USD"}},
                    expect=201)["data"]
    product = w.call("post", "/api/v1/products", dev_key, {"sku": "SKU-1", "name": "Mug",
                                                           "price": {"amount": 900, "currency": "USD"}, "stock": 5},
                     expect=201)["data"]
    coupon = w.call("post", "/api/v1/coupons", dev_key, {"code": "save10", "discount": {"type": "percentage", "value": 10},
                                                         "max_uses": 5}, expect=201)["data"]
    sale = w.call("post", "/api/v1/sales", dev_key, {"name": "Spring", "package_ids": [single["id"]],
                                                     "discount": {"type": "fixed", "value": 50, "currency": "USD"},
                                                     "starts_at": "2026-01-01T00:00:00Z"}, expect=201)["data"]
    card = w.call("post", "/api/v1/gift-cards", dev_key, {"balance": {"amount": 1000, "currency": "USD"}, "note": "n"},
                  expect=201)["data"]
    customer = w.call("post", "/api/v1/customers", dev_key, {"email": "jane@example.com", "name": "Jane"},
                      expect=201)["data"]
    ban = w.call("post", "/api/v1/bans", dev_key, {"type": "ip", "value": "10.0.0.0/8", "reason": "abuse"},
                 expect=201)["data"]
    order = w.call("post", "/api/v1/orders", dev_key, {
        "customer_id": customer["id"], "coupon_code": "SAVE10",
        "items": [{"package_id": package["id"], "quantity": 1}, {"product_id": product["id"], "quantity": 2}]},
        expect=201)["data"]
    w.call("post", "/api/v1/orders", dev_key, {"email": "new@example.com",
                                               "items": [{"package_id": single["id"], "quantity": 1}]}, expect=201)
    # A retried create with an Idempotency-Key: the first order again (marked as a replay), not
    # a second one; the key with another body is a 409.
    retry = {"email": "retry@example.com", "items": [{"package_id": single["id"], "quantity": 1}]}
    once = {**dev_key, "Idempotency-Key": "flows-order-1"}
    first = w.call("post", "/api/v1/orders", once, retry, expect=201)["data"]
    again = w.call("post", "/api/v1/orders", once, retry, expect=201)["data"]
    if again != first or w.last_headers.get("Idempotent-Replayed") != "true":
        w.problems.append(f"an idempotent retry answered {again} ({w.last_headers}), not the first order {first}")
    w.call("post", "/api/v1/orders", once, {**retry, "coupon_code": "SAVE10"}, expect=409)
    subscriptions = w.call("get", "/api/v1/subscriptions", dev_key, expect=200)["data"]["items"]
    w.call("get", f"/api/v1/subscriptions/{subscriptions[0]['id']}", dev_key, expect=200)
    for slug, item, change in [
        ("categories", category, {"description": None}),
        ("packages", package, {"active": False}),
        ("products", product, {"stock": 4}),
        ("coupons", coupon, {"max_uses": None}),
        ("sales", sale, {"ends_at": "2099-01-01T00:00:00Z"}),
        ("gift-cards", card, {"void": True}),
        ("customers", customer, {"name": None}),
        ("bans", ban, {"reason": "spam"}),
        ("orders", order, {"status": "refunded"}),
    ]:
        w.call("get", f"/api/v1/{slug}?limit=10", dev_key, expect=200)
        w.call("get", f"/api/v1/{slug}/{item['id']}", dev_key, expect=200)
        w.call("patch", f"/api/v1/{slug}/{item['id']}", dev_key, change, expect=200)
    w.call("get", "/api/v1/subscriptions?limit=1", dev_key, expect=200)
    for slug, item in [("sales", sale), ("coupons", coupon), ("gift-cards", card), ("bans", ban),
                       ("products", product), ("packages", single)]:
        w.call("delete", f"/api/v1/{slug}/{item['id']}", dev_key, expect=200)
    w.call("delete", f"/api/v1/categories/{category['id']}", dev_key, expect=409)
    w.call("get", f"/api/v1/storefront/{store}/packages", {}, expect=200)
    w.call("get", f"/api/v1/storefront/{store}/categories?limit=5", {}, expect=200)

    # The customer portal.
    session = w.call("post", "/api/v1/auth/portal-sessions", dev_key, {"customer_id": customer["id"]},
                     expect=201)["data"]
    portal = {"Authorization": f"Bearer {session['token']}"}
    w.call("get", "/api/v1/portal/orders", portal, expect=200)
    w.call("get", "/api/v1/portal/subscriptions", portal, expect=200)
    # Its store's managers list and end sessions: one, then a customer's (none left).
    live = w.call("get", f"{s}/portal-sessions", admin, expect=200)["data"]
    w.call("delete", f"{s}/portal-sessions/{live[0]['id']}", admin, expect=200)
    w.call("get", "/api/v1/portal/orders", portal, expect=401)
    w.call("delete", f"{s}/portal-sessions?customer_id={customer['id']}", admin, expect=200)
    w.call("delete", f"{s}/portal-sessions", admin, expect=400)

    # Self-service keys with a key.
    mine = w.call("post", "/api/v1/api-keys", dev_key, {"name": "CI", "permissions": {"Packages": ["View"]}},
                  expect=201)["data"]
    w.call("get", "/api/v1/api-keys", dev_key, expect=200)
    # The new key, which holds no ApiKeys permission, reads its own record.
    me = w.call("get", "/api/v1/api-keys/current", {"X-Api-Key": mine["key"]}, expect=200)["data"]
    if me.get("id") != mine["id"]:
        w.problems.append(f"GET /api/v1/api-keys/current answered {me}, not the key {mine['id']}")
    w.call("post", f"/api/v1/api-keys/{mine['id']}/regenerate", dev_key, expect=200)
    w.call("delete", f"/api/v1/api-keys/{mine['id']}", dev_key, expect=200)

    # Refusals.
    w.call("get", "/api/v1/packages", {}, expect=401)
    tight = w.call("post", f"{s}/api-keys", admin, {"name": "Tight", "permissions": "*", "rate_limit": 1},
                   expect=201)["data"]
    w.call("get", "/api/v1/packages", {"X-Api-Key": tight["key"]}, expect=200)
    w.call("get", "/api/v1/packages", {"X-Api-Key": tight["key"]}, expect=429)
    # A leaked key pasted to the management API: named, then stopped.
    paste = f"TIGHT_KEY={tight['key']}\nsha256 {'ab' * 32}\n"
    found = w.call("post", "/api/leaks", admin, {"text": paste}, expect=200)["data"]
    if [(f["status"], f["key_id"]) for f in found] != [("live", tight["id"])]:
        w.problems.append(f"POST /api/leaks found {found}, not the live key {tight['id']}")
    w.call("post", "/api/leaks", admin, {"text": paste, "stop": True}, expect=200)
    w.call("get", "/api/v1/packages", {"X-Api-Key": tight["key"]}, expect=401)
    w.call("post", "/api/leaks", admin, {"stop": 1}, expect=400)
    w.call("post", "/api/v1/packages", dev_key, {"name": "", "price": {"amount": -1}}, expect=400)
    w.call("get", "/api/v1/packages/pkg_000000000000000000000", dev_key, expect=404)
    w.call("get", f"{s}/logs?limit=5&status=200", admin, expect=200)
    w.call("get", f"{s}/audit?limit=50", admin, expect=200)
    usage = w.call("get", f"{s}/usage", admin, expect=200)
    if not (usage.get("data") or {}).get("keys"):
        w.problems.append(f"usage counted no key's requests: {usage}")
    w.call("get", f"{s}/usage?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", admin, expect=400)
    deliveries = w.call("get", f"{s}/webhooks/{hook['id']}/deliveries", admin, expect=200)
    if not deliveries.get("data"):
        w.problems.append("no webhook delivery was recorded")
    else:
        # Send a finished delivery again. Then, with the endpoint disabled, a resend is a 409
        # (as one of a still pending delivery is: the worker may or may not have sent it yet).
        finished = next((d for d in deliveries["data"] if d["state"] != "pending"), None)
        if finished is None:
            w.problems.append("no finished webhook delivery to resend")
        else:
            again = f"{s}/webhooks/{hook['id']}/deliveries/{finished['id']}/retry"
            w.call("post", again, admin, expect=200)
            w.call("patch", f"{s}/webhooks/{hook['id']}", admin, {"active": False}, expect=200)
            w.call("post", again, admin, expect=409)
            w.call("patch", f"{s}/webhooks/{hook['id']}", admin, {"active": True}, expect=200)
        w.call("post", f"{s}/webhooks/{hook['id']}/deliveries/whd_0000000000000000/retry", admin, expect=404)
    w.call("delete", f"{s}/webhooks/{hook['id']}", admin, expect=200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "debug" / "latchkey")
    args = parser.parse_args()
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    proc, base, banner = start(args.binary, "--allow-private-webhooks")
    try:
        with urllib.request.urlopen(f"{base}/openapi.json") as response:
            doc = json.load(response)
        w = Walk(base, doc)
        walk(w, banner, f"http://127.0.0.1:{receiver.server_address[1]}/hook")
        documented = {(method, path) for path, ops in doc["paths"].items() for method in ops
                      if path not in ("/metrics", "/openapi.json")}
        for method, path in sorted(documented - w.reached):
            w.problems.append(f"{method.upper()} {path}: documented but not reached by this walk")
        for problem in w.problems:
            print(problem)
        print(f"{len(w.reached)} operations reached, {len(w.problems)} problems")
        return 1 if w.problems else 0
    finally:
        proc.terminate()
        proc.wait()
        receiver.shutdown()


if __name__ == "__main__":
    sys.exit(main())
