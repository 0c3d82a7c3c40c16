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


import ipaddress
import json
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import Engine
from ._native import Decision, action_for_method, credential_from_headers

__all__ = ["LatchkeyDenied", "LatchkeyMiddleware", "install", "require", "refusal_body", "client_ip"]


def refusal_body(decision: Decision) -> Dict[str, Any]:
    """The server's wrapper for a refused request."""
    return {
        "success": False,
        "data": None,
        "message": decision.message,
        "errors": [decision.message],
        "code": decision.code,
    }


def client_ip(peer: Optional[str], forwarded_for: Optional[str], trusted_proxies: Sequence[str] = ()) -> Optional[str]:
    """The client address: the peer, or — only behind a trusted proxy — the nearest untrusted
    hop of `X-Forwarded-For`. `None` when the peer is not an IP address."""
    try:
        # Test clients and unix sockets report peers that are not addresses: no address then.
        ipaddress.ip_address(peer or "")
    except ValueError:
        return None
    nets = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in nets)

    if not trusted(peer):
        return peer
    client = peer
    for hop in reversed([h.strip() for h in (forwarded_for or "").split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
        if not trusted(hop):
            break
    return client


class LatchkeyDenied(Exception):
    """Raised by `require` for a refused request; `install` turns it into the response."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision


def _decide(
    engine: Engine,
    headers: Mapping[str, str],
    method: str,
    path: str,
    peer: Optional[str],
    area: Optional[str],
    action: Optional[str],
    trusted_proxies: Sequence[str],
) -> Decision:
    credential = credential_from_headers(headers.get("x-api-key"), headers.get("authorization"))
    ip = client_ip(peer, headers.get("x-forwarded-for"), trusted_proxies)
    if area is not None and action is None:
        action = action_for_method(method)
    return engine.verify(credential, area=area, action=action if area else None, ip=ip, path=path)


def require(
    engine: Engine,
    area: Optional[str] = None,
    action: Optional[str] = None,
    *,
    trusted_proxies: Sequence[str] = (),
) -> Callable[..., Awaitable[Decision]]:
    """A FastAPI dependency: verifies the request's key for `area` (and `action`, or the one
    the HTTP method implies), sets the rate-limit headers, and returns the `Decision`. A
    refusal raises `LatchkeyDenied` (see `install`)."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def dependency(request: Request, response: Response) -> Decision:
        peer = request.client.host if request.client else None
        decision = _decide(
            engine, request.headers, request.method, request.url.path, peer, area, action, trusted_proxies
        )
        if not decision.allowed:
            raise LatchkeyDenied(decision)
        for name, value in decision.headers:
            response.headers[name] = value
        request.state.latchkey = decision
        return decision

    return dependency


def install(app: Any) -> None:
    """Registers the handler that answers `LatchkeyDenied` with the server's status, body and
    headers (FastAPI or Starlette)."""
    from starlette.responses import JSONResponse

    async def handler(_request: Any, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LatchkeyDenied)
        d = exc.decision
        return JSONResponse(refusal_body(d), status_code=d.status, headers=dict(d.headers))

    app.add_exception_handler(LatchkeyDenied, handler)


Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


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
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "/")
        area = self.area_for(path)
        if area is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        peer = client[0] if client else None
        decision = _decide(
            self.engine, headers, scope.get("method", "GET"), path, peer, area, None, self.trusted_proxies
        )
        extra: List[Tuple[bytes, bytes]] = [(n.lower().encode(), v.encode()) for n, v in decision.headers]
        if not decision.allowed:
            body = json.dumps(refusal_body(decision)).encode()
            await send({
                "type": "http.response.start",
                "status": decision.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + extra,
            })
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["latchkey"] = decision

        async def send_with_headers(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)
