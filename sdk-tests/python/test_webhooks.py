"""Webhooks delivered by the engine, checked by an independent receiver: the Standard Webhooks
reference library from PyPI (`standardwebhooks`) verifies every signature we send."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List, Tuple

import pytest
import standardwebhooks.webhooks as standard
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import latchkey
from latchkey import ValidationError


class Receiver:
    """A real HTTP server on loopback that records each request and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: List[Tuple[Dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def shifted_clock(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Moves the verifying library's idea of now, as if the message were checked `by` later."""

    class Shifted(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + by

    monkeypatch.setattr(standard, "datetime", Shifted)


def test_deliveries_verify_with_the_standard_webhooks_library(receiver: Receiver) -> None:
    eng = latchkey.Engine.memory(allow_private_webhooks=True)
    store, _ = eng.create_store("Hooks")
    hook = eng.create_webhook(
        store.id, url=receiver.url, events=["api_key.created", "api_key.regenerated", "api_key.revoked"]
    )
    secret = hook.secret
    assert secret.startswith("whsec_")
    key = eng.create_key(store.id, name="ERP", permissions={"Orders": ["View"]})
    again = eng.regenerate_key(store.id, key.id)
    eng.revoke_key(store.id, key.id)
    done = eng.deliver_webhooks()
    assert (done.queued, done.attempted, done.next_due_ms) == (3, 3, None)

    assert len(receiver.requests) == 3
    verifier = Webhook(secret)
    types = []
    for headers, body in receiver.requests:
        payload = verifier.verify(body, headers)
        assert payload["id"] == headers["webhook-id"]
        assert payload["data"]["id"] == key.id
        assert set(payload) == {"id", "type", "created_at", "data"}
        for secret_text in (key.key, again.key):
            assert secret_text not in body.decode()
        types.append(payload["type"])
    assert sorted(types) == ["api_key.created", "api_key.regenerated", "api_key.revoked"]

    deliveries = eng.webhook_deliveries(store.id, hook.id)
    assert [d.state for d in deliveries] == ["succeeded"] * 3
    assert all(d.attempts[0]["status_code"] == 200 for d in deliveries)
    # The secret is in the create response only.
    assert "whsec_" not in json.dumps([w.to_dict() for w in eng.list_webhooks(store.id)])
    assert "whsec_" not in json.dumps(eng.get_webhook(store.id, hook.id).to_dict())


def test_a_tampered_body_or_a_foreign_secret_fails_verification(receiver: Receiver) -> None:
    eng = latchkey.Engine.memory(allow_private_webhooks=True)
    store, _ = eng.create_store("Hooks")
    hook = eng.create_webhook(store.id, url=receiver.url, events=["api_key.created"])
    eng.create_key(store.id, name="ERP", permissions={"Orders": ["View"]})
    eng.deliver_webhooks()
    headers, body = receiver.requests[0]
    verifier = Webhook(hook.secret)
    verifier.verify(body, headers)
    tampered = body.replace(b'"api_key.created"', b'"api_key.revoked"')
    assert tampered != body
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body + b" ", headers)
    other = eng.create_webhook(store.id, url=receiver.url, events=["order.created"])
    with pytest.raises(WebhookVerificationError):
        Webhook(other.secret).verify(body, headers)
    # Both endpoints are in the audit trail, by the engine's actor.
    trail = [(e.action, e.webhook_id, e.actor["id"]) for e in eng.audit(store.id) if e.action.startswith("webhook_")]
    assert trail == [("webhook_created", other.id, "python"), ("webhook_created", hook.id, "python")]


def test_a_rotated_secret_keeps_verifying_until_its_overlap_ends(receiver: Receiver) -> None:
    """The reference library accepts a delivery when any signature in the header verifies:
    during an overlap, receivers holding the old secret and the new one both verify."""
    eng = latchkey.Engine.memory(allow_private_webhooks=True)
    store, _ = eng.create_store("Hooks")
    hook = eng.create_webhook(store.id, url=receiver.url, events=["api_key.created"])
    rotated = eng.rotate_webhook_secret(store.id, hook.id, overlap_seconds=3600)
    assert rotated.secret != hook.secret and rotated.previous_secret_expires_at
    eng.create_key(store.id, name="during", permissions={"Orders": ["View"]})
    eng.deliver_webhooks()
    headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (hook.secret, rotated.secret):
        assert Webhook(secret).verify(body, headers)["type"] == "api_key.created"

    # With no overlap the old secret stops at once (and the one before it is long gone).
    final = eng.rotate_webhook_secret(store.id, hook.id, overlap_seconds=0)
    assert final.previous_secret_expires_at is None
    eng.create_key(store.id, name="after", permissions={"Orders": ["View"]})
    eng.deliver_webhooks()
    headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(final.secret).verify(body, headers)
    for stale in (hook.secret, rotated.secret):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(body, headers)
    with pytest.raises(ValidationError) as bad:
        eng.rotate_webhook_secret(store.id, hook.id, overlap_seconds=10**7)
    assert bad.value.problems == ["overlap_seconds: must be from 0 to 604800 seconds"]
    assert "whsec_" not in json.dumps(eng.get_webhook(store.id, hook.id).to_dict())


def test_a_finished_delivery_is_resent_by_hand(receiver: Receiver) -> None:
    eng = latchkey.Engine.memory(allow_private_webhooks=True)
    store, _ = eng.create_store("Hooks")
    hook = eng.create_webhook(store.id, url=receiver.url, events=["api_key.created"])
    receiver.status = 410  # gone: the delivery fails at once and the endpoint is disabled
    eng.create_key(store.id, name="ERP", permissions={"Orders": ["View"]})
    eng.deliver_webhooks()
    [delivery] = eng.webhook_deliveries(store.id, hook.id)
    assert delivery.state == "failed" and eng.get_webhook(store.id, hook.id).active is False
    with pytest.raises(latchkey.ConflictError):
        eng.retry_webhook_delivery(store.id, hook.id, delivery.id)
    eng.update_webhook(store.id, hook.id, active=True)
    receiver.status = 200
    assert eng.retry_webhook_delivery(store.id, hook.id, delivery.id).state == "pending"
    assert eng.deliver_webhooks().attempted == 1
    [done] = eng.webhook_deliveries(store.id, hook.id)
    assert (done.state, len(done.attempts)) == ("succeeded", 2)
    first, second = receiver.requests
    assert first[0]["webhook-id"] == second[0]["webhook-id"] and first[1] == second[1]
    with pytest.raises(latchkey.NotFoundError):
        eng.retry_webhook_delivery(store.id, hook.id, "whd_0000000000000000")


@pytest.mark.parametrize("minutes", [6, -6])
def test_a_timestamp_six_minutes_off_fails_verification(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, minutes: int
) -> None:
    eng = latchkey.Engine.memory(allow_private_webhooks=True)
    store, _ = eng.create_store("Hooks")
    hook = eng.create_webhook(store.id, url=receiver.url, events=["api_key.created"])
    eng.create_key(store.id, name="ERP", permissions={"Orders": ["View"]})
    eng.deliver_webhooks()
    headers, body = receiver.requests[0]
    sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=timezone.utc)
    assert abs(datetime.now(timezone.utc) - sent_at) < timedelta(minutes=1)
    verifier = Webhook(hook.secret)
    # Within the five-minute tolerance the same message still verifies; beyond it, never.
    shifted_clock(monkeypatch, timedelta(minutes=4 if minutes > 0 else -4))
    verifier.verify(body, headers)
    shifted_clock(monkeypatch, timedelta(minutes=minutes))
    with pytest.raises(WebhookVerificationError, match="too old" if minutes > 0 else "too new"):
        verifier.verify(body, headers)


def test_test_dispatch_returns_what_the_endpoint_answered() -> None:
    receiver = Receiver(status=418)
    try:
        eng = latchkey.Engine.memory(allow_private_webhooks=True)
        store, _ = eng.create_store("Hooks")
        hook = eng.create_webhook(store.id, url=receiver.url, events=["order.created"])
        result = eng.test_webhook(store.id, hook.id)
        assert (result.status_code, result.body, result.error) == (418, "ok", None)
        assert result.duration_ms >= 0
        headers, body = receiver.requests[0]
        assert Webhook(hook.secret).verify(body, headers)["type"] == "webhook.test"
    finally:
        receiver.close()


def test_internal_targets_are_refused_unless_allowed(receiver: Receiver) -> None:
    eng = latchkey.Engine.memory()
    store, _ = eng.create_store("Hooks")
    for url in [receiver.url, "http://2130706433/", "http://[::ffff:169.254.169.254]/"]:
        with pytest.raises(ValidationError) as caught:
            eng.create_webhook(store.id, url=url, events=["order.created"])
        assert caught.value.code == "VALIDATION"
        assert any(p.startswith("url: refused") for p in caught.value.problems), caught.value.problems
    assert eng.list_webhooks(store.id) == []
    with pytest.raises(ValidationError) as caught:
        eng.create_webhook(store.id, url="ftp://x", events=["order.paid"])
    assert len(caught.value.problems) == 2


def test_the_background_worker_delivers(receiver: Receiver) -> None:
    eng = latchkey.Engine.memory(allow_private_webhooks=True)
    eng.start_webhook_worker()
    store, _ = eng.create_store("Hooks")
    eng.create_webhook(store.id, url=receiver.url, events=["api_key.created"])
    eng.create_key(store.id, name="ERP", permissions={"Orders": ["View"]})
    deadline = datetime.now() + timedelta(seconds=10)
    while not receiver.requests and datetime.now() < deadline:
        threading.Event().wait(0.01)
    assert len(receiver.requests) == 1


def test_webhook_timeout_limits_an_attempt() -> None:
    """A receiver that answers after 2 s: past a 0.2 s limit, within the default 10 s."""
    answered = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            answered.wait(2)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        eng = latchkey.Engine.memory(allow_private_webhooks=True, webhook_timeout=0.2, cache_mb=8)
        store, _ = eng.create_store("Hooks")
        url = f"http://127.0.0.1:{server.server_address[1]}/slow"
        hook = eng.create_webhook(store.id, url=url, events=["order.created"])
        result = eng.test_webhook(store.id, hook.id)
        assert result.status_code is None
        assert result.error
        assert result.duration_ms < 1500, result.duration_ms
    finally:
        answered.set()
        server.shutdown()
        server.server_close()


def test_engine_options_are_checked_naming_every_problem(tmp_path) -> None:
    with pytest.raises(ValidationError) as caught:
        latchkey.Engine.open(None, allow_private_webhooks="yes", cache_mb=0, webhook_timeout=301)  # type: ignore[arg-type]
    assert caught.value.problems == [
        "path: expected a file path (str or os.PathLike)",
        "allow_private_webhooks: expected True or False",
        "cache_mb: must be between 1 and 1048576 (1 TiB)",
        "webhook_timeout: must be more than zero and at most 300 seconds",
    ]
    for bad in [
        {"cache_mb": True},
        {"cache_mb": 1.5},
        {"cache_mb": -1},
        {"cache_mb": 2**70},
        {"webhook_timeout": 0},
        {"webhook_timeout": float("nan")},
        {"webhook_timeout": "10"},
        {"webhook_timeout": False},
    ]:
        with pytest.raises(ValidationError):
            latchkey.Engine.memory(**bad)
    # A refused open writes nothing; a path-like one opens.
    path = tmp_path / "shop.redb"
    with pytest.raises(ValidationError):
        latchkey.Engine.open(path, cache_mb=0)
    assert not path.exists()
    eng = latchkey.Engine.open(path, cache_mb=1, webhook_timeout=300)
    eng.create_store("Shop")
    assert path.exists()
