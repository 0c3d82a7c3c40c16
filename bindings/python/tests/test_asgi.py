"""The ASGI integration with a real FastAPI app and a real Starlette app, through HTTP clients."""

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi import Depends, FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

import latchkey  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from latchkey.asgi import LatchkeyMiddleware, client_ip, install, require  # noqa: E402


@pytest.fixture
def setup():
    eng = latchkey.Engine.memory()
    store, _ = eng.create_store("ASGI")
    key = eng.create_key(store.id, name="erp", permissions={"Orders": ["View"]},
                         rate_limit={"limit": 3, "algorithm": "fixed_window"})
    return eng, store, key


def fastapi_app(eng):
    app = FastAPI()
    install(app)

    @app.get("/api/v1/orders")
    def list_orders(d=Depends(require(eng, "Orders"))):
        return {"key_id": d.key_id}

    @app.post("/api/v1/orders")
    def create_order(d=Depends(require(eng, "Orders"))):
        return {"created": True}

    return app


def test_fastapi_dependency_answers_like_the_server(setup):
    eng, store, key = setup
    client = TestClient(fastapi_app(eng))
    ok = client.get("/api/v1/orders", headers={"X-Api-Key": key.key})
    assert ok.status_code == 200 and ok.json() == {"key_id": key.id}
    assert ok.headers["x-ratelimit-limit"] == "3" and ok.headers["x-ratelimit-remaining"] == "2"

    missing = client.get("/api/v1/orders")
    assert missing.status_code == 401
    assert missing.json() == {"success": False, "data": None, "message": "API key required",
                              "errors": ["API key required"], "code": "MISSING"}
    bearer = client.get("/api/v1/orders", headers={"Authorization": f"Bearer {key.key}"})
    assert bearer.status_code == 200
    forbidden = client.post("/api/v1/orders", headers={"X-Api-Key": key.key})
    assert forbidden.status_code == 403
    assert forbidden.json()["message"] == "Missing permission Orders:Edit"
    # A refusal charges nothing: the third allowed request uses up the limit of 3.
    assert client.get("/api/v1/orders", headers={"X-Api-Key": key.key}).headers["x-ratelimit-remaining"] == "0"
    limited = client.get("/api/v1/orders", headers={"X-Api-Key": key.key})
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) >= 1

    # Every request that named a key is in the store's request log with its final status
    # (the missing-key request names no store, so it is not).
    log = eng.logs(store.id)
    assert [(e.method, e.status, e.code) for e in log] == [
        ("GET", 429, "RATE_LIMITED"),
        ("GET", 200, "OK"),
        ("POST", 403, "FORBIDDEN"),
        ("GET", 200, "OK"),
        ("GET", 200, "OK"),
    ]
    assert all(e.key_id == key.id and e.path == "/api/v1/orders" for e in log)
    assert eng.logs(store.id, status=403, limit=5)[0].code == "FORBIDDEN"


def test_starlette_middleware(setup):
    eng, store, key = setup

    async def orders(request):
        return JSONResponse({"key_id": request.scope["state"]["latchkey"].key_id})

    async def health(request):
        return JSONResponse({"ok": True})

    inner = Starlette(routes=[Route("/api/v1/orders", orders), Route("/healthz", health)])
    app = LatchkeyMiddleware(inner, eng, area_for=lambda p: "Orders" if p.startswith("/api/v1/orders") else None)
    client = TestClient(app)
    assert client.get("/healthz").status_code == 200
    ok = client.get("/api/v1/orders", headers={"x-api-key": key.key})
    assert ok.status_code == 200 and ok.json()["key_id"] == key.id
    assert "x-ratelimit-remaining" in ok.headers
    bad = client.get("/api/v1/orders", headers={"x-api-key": key.key[:-1] + ("y" if key.key.endswith("x") else "x")})
    assert bad.status_code == 401 and bad.json()["message"] == "Invalid API key"
    assert [(e.status, e.code) for e in eng.logs(store.id)] == [(200, "OK")]


def test_client_ip_trusts_only_trusted_proxies():
    assert client_ip("10.0.0.1", "6.6.6.6", ()) == "10.0.0.1"
    assert client_ip("10.0.0.1", "6.6.6.6, 10.0.0.2", ("10.0.0.0/8",)) == "6.6.6.6"
    assert client_ip("10.0.0.1", "garbage", ("10.0.0.0/8",)) == "10.0.0.1"
    assert client_ip(None, "6.6.6.6", ()) is None
    assert client_ip("testclient", "6.6.6.6", ()) is None
    with pytest.raises(latchkey.ValidationError) as bad:
        client_ip("10.0.0.1", None, ("10.0.0.0/33", "nope"))
    assert len(bad.value.problems) == 2


def test_log_filters_are_validated(setup):
    eng, store, _ = setup
    with pytest.raises(latchkey.ValidationError) as bad:
        eng.logs(store.id, status=99, limit=0)
    assert len(bad.value.problems) == 2


def test_a_recorded_request_is_checked_and_every_problem_named(setup):
    # The same core check as Node's recordRequest: nothing is written when a part is wrong.
    eng, store, key = setup
    ok = eng.verify(key.key, area="Orders", action="View")
    with pytest.raises(latchkey.ValidationError) as bad:
        eng.record_request(ok, method=" ", path="/", status=99, ip="x", latency_us=-1)
    assert sorted(p.split(":")[0] for p in bad.value.problems) == ["ip", "latency_us", "method", "status"]
    with pytest.raises(latchkey.ValidationError):
        eng.record_request(ok, method="GET", path="/", status=600)
    eng.record_request(ok, method="GET", path="/api/v1/orders", status=200, ip="203.0.113.7", latency_us=5)
    eng.flush()
    assert [(e.status, e.ip, e.latency_us) for e in eng.logs(store.id)] == [(200, "203.0.113.7", 5)]


def test_usage_sums_the_log_per_key(setup):
    eng, store, key = setup
    for _ in range(3):
        d = eng.verify(key.key, area="Orders", action="View")
        eng.record_request(d, method="GET", path="/api/v1/orders", status=d.status, latency_us=10)
    denied = eng.verify(key.key, area="Orders", action="Edit")
    eng.record_request(denied, method="POST", path="/api/v1/orders", status=denied.status, latency_us=30)
    usage = eng.usage(store.id)
    assert (usage.requests, usage.by_status, usage.by_code) == (4, {"2xx": 3, "4xx": 1}, {"FORBIDDEN": 1, "OK": 3})
    [mine] = usage.keys
    counts = [mine[f] for f in ("key_id", "requests", "errors", "denied", "average_latency_us")]
    assert counts == [key.id, 4, 1, 1, 15]
    # A period in the past holds nothing; an inverted one is refused.
    past = datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert eng.usage(store.id, since=past, until=past + timedelta(days=1)).requests == 0
    with pytest.raises(latchkey.ValidationError):
        eng.usage(store.id, since=past + timedelta(days=1), until=past)


def test_every_header_line_counts_like_the_server(setup):
    """A proxy may add its own `X-Forwarded-For` line (HAProxy's `option forwardfor` does)
    after one the client sent: the client's line must not decide the address. A credential
    header sent twice is ambiguous and refused (401) rather than one of them tried."""
    eng, store, key = setup
    fenced = eng.create_key(store.id, name="fenced", permissions={"Orders": ["View"]},
                            ip_allowlist=["203.0.113.7"])
    spoofed = [("x-api-key", fenced.key), ("x-forwarded-for", "203.0.113.7"),
               ("x-forwarded-for", "198.51.100.9")]
    honest = [("x-api-key", fenced.key), ("x-forwarded-for", "198.51.100.9"),
              ("x-forwarded-for", "203.0.113.7")]
    twice = [("x-api-key", key.key), ("x-api-key", key.key)]
    twice_auth = [("authorization", f"Bearer {key.key}"), ("authorization", f"Bearer {key.key}")]

    trusted = FastAPI()
    install(trusted)

    @trusted.get("/api/v1/orders")
    def list_orders(d=Depends(require(eng, "Orders", trusted_proxies=["10.0.0.0/8"]))):
        return {"key_id": d.key_id}

    inner = Starlette(routes=[Route("/api/v1/orders", lambda request: JSONResponse({}))])
    middleware = LatchkeyMiddleware(inner, eng, area_for=lambda p: "Orders",
                                    trusted_proxies=["10.0.0.0/8"])
    for target in (trusted, middleware):
        client = TestClient(target, client=("10.0.0.1", 50000))
        refused = client.get("/api/v1/orders", headers=spoofed)
        assert refused.status_code == 403, (target, refused.text)
        assert refused.json()["code"] == "IP_NOT_ALLOWED"
        assert client.get("/api/v1/orders", headers=honest).status_code == 200
        for headers in (twice, twice_auth):
            answer = client.get("/api/v1/orders", headers=headers)
            assert (answer.status_code, answer.json()["code"]) == (401, "INVALID"), (target, headers)


def test_header_names_count_whatever_case_the_server_passes_them_in(setup):
    """ASGI servers lowercase header names, but one that passes them as sent must not let a
    second credential line, spelt differently, go unseen."""
    import asyncio

    eng, _, key = setup
    inner = Starlette(routes=[Route("/api/v1/orders", lambda request: JSONResponse({}))])
    middleware = LatchkeyMiddleware(inner, eng, area_for=lambda p: "Orders")

    def status(headers):
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/api/v1/orders", "raw_path": b"/api/v1/orders",
                 "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(middleware(scope, receive, send))
        return sent[0]["status"]

    assert status([(b"X-API-KEY", key.key.encode())]) == 200
    assert status([(b"x-api-key", key.key.encode()), (b"X-Api-Key", key.key.encode())]) == 401
    assert status([(b"Authorization", f"Bearer {key.key}".encode()),
                   (b"authorization", f"Bearer {key.key}".encode())]) == 401


def test_a_method_that_implies_no_action_is_answered_405_like_the_server(setup):
    """On an area's route, OPTIONS or PROPFIND names no action, so no permission can be
    checked: the route must not run. The key is verified first (401 without one)."""
    eng, store, _ = setup
    coupons = eng.create_key(store.id, name="coupons", permissions={"Coupons": ["View"]})
    methods = ["GET", "OPTIONS", "PROPFIND"]

    app = FastAPI()
    install(app)

    @app.api_route("/api/v1/orders", methods=methods)
    def orders(d=Depends(require(eng, "Orders"))):
        return {"leaked": True}

    @app.api_route("/api/v1/orders/fixed", methods=methods)
    def fixed(d=Depends(require(eng, "Coupons", "View"))):
        return {"ok": True}

    async def leak(request):
        return JSONResponse({"leaked": True})

    inner = Starlette(routes=[Route("/api/v1/orders", leak, methods=methods)])
    middleware = LatchkeyMiddleware(inner, eng, area_for=lambda p: "Orders")
    for target in (app, middleware):
        client = TestClient(target, raise_server_exceptions=False)
        assert client.get("/api/v1/orders", headers={"x-api-key": coupons.key}).status_code == 403
        for method in ("OPTIONS", "PROPFIND"):
            answer = client.request(method, "/api/v1/orders", headers={"x-api-key": coupons.key})
            assert answer.status_code == 405, (target, method, answer.text)
            assert answer.json() == {"success": False, "data": None, "message": "Method not allowed",
                                     "errors": [], "code": "METHOD_NOT_ALLOWED"}
            assert "x-ratelimit-limit" in answer.headers
            assert client.request(method, "/api/v1/orders").status_code == 401
    # An action given outright applies to every method.
    client = TestClient(app)
    assert client.request("OPTIONS", "/api/v1/orders/fixed", headers={"x-api-key": coupons.key}).status_code == 200
    assert [e.status for e in eng.logs(store.id)].count(405) == 4
