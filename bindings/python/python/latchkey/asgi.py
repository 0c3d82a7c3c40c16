"""Latchkey for ASGI apps: a FastAPI dependency and a Starlette/ASGI middleware that answer
exactly like the Latchkey server (statuses, wrapper bodies, rate-limit headers).

FastAPI::

    from latchkey.asgi import install, require
    app = FastAPI()
    install(app)                                   # answers refusals with the server's body
    @app.get("/orders")
    def orders(d = Depends(require(eng, "Orders"))):  # action from the method (GET → View)
        ...

Any ASGI app::

    app = LatchkeyMiddleware(app, eng, area_for=lambda path: "Orders" if path.startswith("/orders") else None)

The client address is the socket peer's, unless the peer is in `trusted_proxies`, in which case
the nearest untrusted address of `X-Forwarded-For` is used (as the server does).
"""


import json
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, MutableMapping, Optional, Sequence, Tuple

from . import Engine
from ._native import (
    Decision,
    TrustedProxies,
    action_for_method,
    credential_from_headers,
    method_not_allowed_json,
)

__all__ = [
    "LatchkeyDenied",
    "LatchkeyMethodNotAllowed",
    "LatchkeyMiddleware",
    "install",
    "require",
    "refusal_body",
    "client_ip",
]


def refusal_body(decision: Decision) -> Dict[str, Any]:
    """The server's wrapper for a refused request."""
    body: Dict[str, Any] = json.loads(decision.refusal_json())
    return body


def client_ip(peer: Optional[str], forwarded_for: Optional[str], trusted_proxies: Sequence[str] = ()) -> Optional[str]:
    """The client address: the peer, or — only behind a trusted proxy — the nearest untrusted
    hop of `X-Forwarded-For`. `None` when the peer is not an IP address."""
    return TrustedProxies(list(trusted_proxies)).client_ip(peer, forwarded_for)


class LatchkeyDenied(Exception):
    """Raised by `require` for a refused request; `install` turns it into the response."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision


class LatchkeyMethodNotAllowed(LatchkeyDenied):
    """Raised by `require` (with an area and no action) for a method that implies no action
    (OPTIONS, PROPFIND, …): no permission could be checked, so the route is not run. The key
    was verified (`decision` is allowed); `install` answers 405 as the server does."""

    def __init__(self, decision: Decision) -> None:
        Exception.__init__(self, "Method not allowed")
        self.decision = decision


def _decide(
    engine: Engine,
    lines: Callable[[str], List[str]],
    method: str,
    path: str,
    peer: Optional[str],
    area: Optional[str],
    action: Optional[str],
    proxies: TrustedProxies,
) -> Tuple[Decision, Optional[str], bool]:
    """`lines(name)` is every line of a header, in order: a proxy may add its own
    `X-Forwarded-For` line after the client's, and a credential sent twice is refused.

    The third value is true when `area` applies but the method implies no action: the key is
    then only verified, and the caller answers 405 if it is allowed (as the server's routes
    answer a method they do not serve)."""
    credential = credential_from_headers(lines("x-api-key"), lines("authorization"))
    forwarded = lines("x-forwarded-for")
    ip = proxies.client_ip(peer, ", ".join(forwarded) if forwarded else None)
    if area is not None and action is None:
        action = action_for_method(method)
    unserved = area is not None and action is None
    if unserved or area is None:
        return engine.verify(credential, ip=ip, path=path), ip, unserved
    return engine.verify(credential, area=area, action=action, ip=ip, path=path), ip, False


# The headers `_decide` reads (names in lower case, as ASGI servers give them).
_WANTED = (b"x-api-key", b"authorization", b"x-forwarded-for")


def _header_lines(raw: Iterable[Tuple[bytes, bytes]]) -> Dict[bytes, List[str]]:
    """Every line of each header `_decide` reads, in request order, in one pass over the
    request's headers: decoding them all into a dict first cost 2.4 us a request of eight
    headers, this 1.0 us (timeit)."""
    found: Dict[bytes, List[str]] = {name: [] for name in _WANTED}
    for name, value in raw:
        lines = found.get(name)
        if lines is None:
            # A server that left a name's case as sent.
            lines = found.get(name.lower())
        if lines is not None:
            lines.append(value.decode("latin-1"))
    return found


# What the request log needs once the response status is known: scope["state"][_PENDING].
_PENDING = "latchkey_log"


def require(
    engine: Engine,
    area: Optional[str] = None,
    action: Optional[str] = None,
    *,
    trusted_proxies: Sequence[str] = (),
) -> Callable[..., Awaitable[Decision]]:
    """A FastAPI dependency: verifies the request's key for `area` (and `action`, or the one
    the HTTP method implies), sets the rate-limit headers, and returns the `Decision`. A
    refusal raises `LatchkeyDenied` (see `install`, which also writes the request log)."""
    from starlette.requests import Request
    from starlette.responses import Response

    proxies = TrustedProxies(list(trusted_proxies))

    async def dependency(request: Request, response: Response) -> Decision:
        started = time.perf_counter()
        peer = request.client.host if request.client else None
        decision, ip, unserved = _decide(
            engine, request.headers.getlist, request.method, request.url.path, peer, area, action, proxies
        )
        request.state.latchkey = decision
        setattr(request.state, _PENDING, (engine, ip, started))
        if not decision.allowed:
            raise LatchkeyDenied(decision)
        if unserved:
            raise LatchkeyMethodNotAllowed(decision)
        for name, value in decision.headers:
            response.headers[name] = value
        return decision

    return dependency


def install(app: Any) -> None:
    """Registers the handler that answers `LatchkeyDenied` with the server's status, body and
    headers, and the middleware that records every request `require` decided in the store's
    request log with its final status (FastAPI or Starlette; call before the app starts)."""
    from starlette.responses import JSONResponse

    async def handler(_request: Any, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LatchkeyDenied)
        d = exc.decision
        if isinstance(exc, LatchkeyMethodNotAllowed):
            return JSONResponse(json.loads(method_not_allowed_json()), status_code=405, headers=dict(d.headers))
        return JSONResponse(refusal_body(d), status_code=d.status, headers=dict(d.headers))

    app.add_exception_handler(LatchkeyDenied, handler)
    app.add_middleware(_RequestLog)


# The ASGI types as Starlette declares them, so a Starlette or FastAPI app fits either side.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LatchkeyMiddleware:
    """Pure ASGI middleware: verifies every HTTP request whose path `area_for` maps to an area
    (others pass through), refuses with the server's answer, and adds the rate-limit headers to
    allowed responses. The decision is in `scope["state"]["latchkey"]`."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        engine: Engine,
        *,
        area_for: Callable[[str], Optional[str]],
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.engine = engine
        self.area_for = area_for
        self.proxies = TrustedProxies(list(trusted_proxies))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "/")
        area = self.area_for(path)
        if area is None:
            await self.app(scope, receive, send)
            return
        headers = _header_lines(scope.get("headers", []))
        client = scope.get("client")
        peer = client[0] if client else None
        started = time.perf_counter()
        method = scope.get("method", "GET")
        decision, ip, unserved = _decide(
            self.engine, lambda name: headers.get(name.encode("latin-1"), []), method, path, peer, area, None, self.proxies
        )
        extra: List[Tuple[bytes, bytes]] = [(n.lower().encode(), v.encode()) for n, v in decision.headers]
        if not decision.allowed or unserved:
            # A method that implies no action on an area's path: 405, as the server's routes.
            answered = 405 if decision.allowed else decision.status
            body = (method_not_allowed_json() if decision.allowed else json.dumps(refusal_body(decision))).encode()
            await send({
                "type": "http.response.start",
                "status": answered,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + extra,
            })
            await send({"type": "http.response.body", "body": body})
            _record(self.engine, decision, method, path, answered, ip, started)
            return
        scope.setdefault("state", {})["latchkey"] = decision
        status = [500]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _record(self.engine, decision, method, path, status[0], ip, started)


def _record(
    engine: Engine, decision: Decision, method: str, path: str, status: int, ip: Optional[str], started: float
) -> None:
    latency_us = int((time.perf_counter() - started) * 1e6)
    engine.record_request(decision, method=method, path=path, status=status, ip=ip, latency_us=latency_us)


class _RequestLog:
    """Installed by `install`: once the response of a request `require` decided has started,
    records it with its status (a handler that fails is logged as 500)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            pending = scope.get("state", {}).get(_PENDING)
            if pending is not None:
                engine, ip, started = pending
                decision = scope["state"]["latchkey"]
                _record(engine, decision, scope.get("method", "GET"), scope.get("path", "/"), status[0], ip, started)
