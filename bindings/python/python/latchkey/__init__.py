"""Latchkey in-process: stores, API keys, permissions, verify, rate limits and store entities.

    import latchkey
    eng = latchkey.Engine.memory()                      # or latchkey.Engine.open("shop.redb")
    store, default_key = eng.create_store("My Shop")
    created = eng.create_key(store.id, name="ERP", permissions={"Orders": ["View"]})
    d = eng.verify(created.key, area="Orders", action="View", ip="127.0.0.1", path="/api/v1/orders")
    d.allowed, d.code, d.status, d.message, d.headers

Calls that write release the GIL. Errors are `LatchkeyError` subclasses with a `code` and
every problem; a refused request is a `Decision`, not an exception.
"""

from __future__ import annotations

import json
from datetime import datetime
from os import PathLike
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Type, Union

from . import _native
from ._native import Decision
from .errors import (
    ClosedError,
    ConflictError,
    ForbiddenError,
    LatchkeyError,
    NotAllowedError,
    NotFoundError,
    PlanRequiredError,
    StorageError,
    ValidationError,
)

__version__: str = _native.__version__

__all__ = [
    "Engine",
    "Decision",
    "Record",
    "Store",
    "Key",
    "CreatedKey",
    "Created",
    "Page",
    "LatchkeyError",
    "ValidationError",
    "NotFoundError",
    "ConflictError",
    "ForbiddenError",
    "PlanRequiredError",
    "NotAllowedError",
    "StorageError",
    "ClosedError",
    "redact",
]

_UNSET: Any = object()


def redact(text: str, *, hex: bool = False) -> str:
    """`text` with every Latchkey credential in it masked as key lists show it
    (`lk_ab12cd34_…Xy9Z`, `cs_…9f3a`): for log lines, error reports and tickets, which must not
    keep a key. With `hex=True` every 64-hex word is masked too: a hex key looks like any
    SHA-256 digest, so mask them all where digests are not expected. Needs no engine."""
    return _native.redact(text, hex)


class Record:
    """A read-only result: fields as attributes (`store.id`, `order.items`) and by name
    (`store["id"]`, `"key" in created`). `to_dict()` gives a plain dict. (Not a `Mapping`, so
    that fields called `items` or `keys` are not shadowed by mapping methods.)"""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("results are read-only")

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record):
            return bool(self._data == other._data)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> Dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self._data.items() if k not in ("key", "consumer_secret", "code")}
        return f"{type(self).__name__}({shown!r})"


class Store(Record):
    """A store and its settings (SPEC §6)."""


class Key(Record):
    """An API key, masked: everything but the secret."""


class CreatedKey(Key):
    """A key with its secret, returned once by create and regenerate: `key` (token and hex),
    or `consumer_key` + `consumer_secret` (pair). `credential` is what a client presents."""

    @property
    def credential(self) -> str:
        if "key" in self._data:
            return str(self._data["key"])
        return f"{self._data['consumer_key']}:{self._data['consumer_secret']}"


class Page(Record):
    """One page of a list: `items` and `next_cursor` (None on the last page)."""


class Created(Record):
    """An entity as a create answered it. `replayed` is True when an earlier create with the
    same idempotency key made it and this call changed nothing (the HTTP API's
    `Idempotent-Replayed: true`); it is not one of the entity's fields."""

    __slots__ = ("_replayed",)

    def __init__(self, data: Mapping[str, Any], replayed: bool) -> None:
        super().__init__(data)
        object.__setattr__(self, "_replayed", replayed)

    @property
    def replayed(self) -> bool:
        return bool(self._replayed)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError("Validation failed", "VALIDATION", ["a datetime must carry a time zone"])
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _page(text: str) -> "Page":
    page = json.loads(text)
    return Page({"items": [Record(i) for i in page["items"]], "next_cursor": page["next_cursor"]})


def _dump(fields: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in fields.items() if v is not _UNSET}, default=_encode)


class _Verify(Protocol):
    def __call__(
        self,
        credential: Optional[str],
        *,
        area: Optional[str] = None,
        action: Optional[str] = None,
        ip: Optional[str] = None,
        path: str = "/",
    ) -> "Decision": ...


class Engine:
    """The engine on a database file (`Engine.open`) or in memory (`Engine.memory`).

    `actor` names who made a change in the audit trail (default "python")."""

    __slots__ = ("_native", "actor", "verify")

    verify: _Verify
    """Decides one request. Bad arguments (an unknown area or action, an unreadable IP) are a
    `ValidationError`; a refused request is a `Decision` with `allowed` false.

    The native function itself, bound to the engine, with the same keyword-only arguments: a
    Python method around it would add a frame that costs a fifth of the call."""

    def __init__(self, native: "_native.Engine", actor: str = "python") -> None:
        # `Engine("shop.redb")` is the natural first guess; say what to call instead of failing
        # later on an attribute of a string.
        if not isinstance(native, _native.Engine):
            raise TypeError(
                "Engine is made by Engine.open(path) or Engine.memory(), "
                f"not from {type(native).__name__}"
            )
        self._native = native
        self.actor = actor
        self.verify = native.verify

    @classmethod
    def open(
        cls,
        path: Union[str, "PathLike[str]"],
        actor: str = "python",
        *,
        allow_private_webhooks: bool = False,
        cache_mb: Optional[int] = None,
        webhook_timeout: Optional[float] = None,
    ) -> "Engine":
        """Opens (or creates) a database file.

        `allow_private_webhooks` lets webhooks target loopback, private and link-local
        addresses (refused by default, at registration and at every dispatch). `cache_mb`
        sizes the database's page cache (default 64, from 1 to 1048576). `webhook_timeout`
        limits one delivery attempt, in seconds (default 10, at most 300)."""
        native = _native.Engine.open(path, allow_private_webhooks, cache_mb, webhook_timeout)
        return cls(native, actor)

    @classmethod
    def memory(
        cls,
        actor: str = "python",
        *,
        allow_private_webhooks: bool = False,
        cache_mb: Optional[int] = None,
        webhook_timeout: Optional[float] = None,
    ) -> "Engine":
        """An engine on an in-memory database; the options are those of `open`."""
        return cls(_native.Engine.memory(allow_private_webhooks, cache_mb, webhook_timeout), actor)

    # ---- stores ---------------------------------------------------------------------------

    def create_store(self, name: str, **settings: Any) -> Tuple[Store, CreatedKey]:
        reply = json.loads(self._native.create_store(self.actor, _dump({"name": name, **settings})))
        return Store(reply["store"]), CreatedKey(reply["default_key"])

    def get_store(self, store_id: str) -> Store:
        return Store(json.loads(self._native.get_store(store_id)))

    def list_stores(self) -> List[Store]:
        return [Store(s) for s in json.loads(self._native.list_stores())]

    def update_store(self, store_id: str, **settings: Any) -> Store:
        return Store(json.loads(self._native.update_store(store_id, self.actor, _dump(settings))))

    # ---- keys -----------------------------------------------------------------------------

    def create_key(
        self,
        store_id: str,
        *,
        name: str,
        permissions: Any,
        format: Any = _UNSET,
        environment: Any = _UNSET,
        description: Any = _UNSET,
        rate_limit: Any = _UNSET,
        ip_allowlist: Any = _UNSET,
        expires_at: Any = _UNSET,
        meta: Any = _UNSET,
        active: Any = _UNSET,
    ) -> CreatedKey:
        fields = dict(
            name=name,
            permissions=permissions,
            format=format,
            environment=environment,
            description=description,
            rate_limit=rate_limit,
            ip_allowlist=[] if ip_allowlist is None else ip_allowlist,
            expires_at=expires_at,
            meta=meta,
            active=active,
        )
        if rate_limit is None:
            fields["rate_limit"] = _UNSET
        return CreatedKey(json.loads(self._native.create_key(store_id, self.actor, _dump(fields))))

    def get_key(self, store_id: str, key_id: str) -> Key:
        return Key(json.loads(self._native.get_key(store_id, key_id)))

    def list_keys(self, store_id: str) -> List[Key]:
        return [Key(k) for k in json.loads(self._native.list_keys(store_id))]

    def update_key(self, store_id: str, key_id: str, **changes: Any) -> Key:
        return Key(json.loads(self._native.update_key(store_id, self.actor, key_id, _dump(changes))))

    def regenerate_key(self, store_id: str, key_id: str, *, overlap_seconds: int = 0) -> CreatedKey:
        """A new secret for the key (the result's `key` or `consumer_secret`, shown this once).
        The old secret stops working at once, or keeps working for `overlap_seconds` (up to
        604800, a week) so clients can switch over without a refused request."""
        fields = {"overlap_seconds": overlap_seconds}
        return CreatedKey(json.loads(self._native.regenerate_key(store_id, self.actor, key_id, _dump(fields))))

    def revoke_key(self, store_id: str, key_id: str) -> None:
        self._native.revoke_key(store_id, self.actor, key_id)

    def audit(self, store_id: str, limit: int = 100) -> List[Record]:
        """Who created, changed or revoked what, newest first (at most `limit`, 1–1000)."""
        return [Record(e) for e in json.loads(self._native.audit(store_id, limit))]

    def check_leaks(self, text: str, *, stop: bool = False) -> List[Record]:
        """The credentials in `text` (a file, a pasted snippet, a support ticket), checked
        against the keys: each finding's `line`, `shape` (`token`, `pair_secret`, `hex`),
        `masked` form, `status` (`not_live`, `live`, `revoked`, `overlap_ended`,
        `secret_replaced`, `not_stopped`), the `key_id` and `store_id` it names, and its
        `last_used_at` and `last_used_ip` (whether the leak may have been used). With
        `stop=True` the live ones are stopped (revoked; an old secret has its overlap ended; a
        default key gets a new secret, not shown). A 64-hex string that names no key is left
        out: most are digests. A finding never holds the credential."""
        return [Record(f) for f in json.loads(self._native.check_leaks(text, stop, self.actor))]

    # ---- verify is the native function itself (see `verify` above); buffered writes --------

    def flush(self) -> None:
        self._native.flush()

    def close(self) -> None:
        """Writes what is buffered and releases the database file (once calls already running
        on other threads finish), so it may be opened again. Every later call, `verify`
        included, raises `ClosedError`; closing twice is harmless. `with Engine.open(path) as
        eng:` closes at the end of the block."""
        self._native.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    # ---- request log (SPEC §7, seed 004) --------------------------------------------------

    def record_request(
        self,
        decision: Decision,
        *,
        method: str,
        path: str,
        status: int,
        ip: Optional[str] = None,
        latency_us: int = 0,
    ) -> None:
        """Records the request `decision` answered (buffered; never blocks). Nothing is
        recorded when the credential matched no key."""
        self._native.record_request(decision, method, path, status, ip, latency_us)

    def logs(
        self,
        store_id: str,
        *,
        key_id: Optional[str] = None,
        status: Optional[int] = None,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
        limit: Optional[int] = None,
    ) -> List[Record]:
        """The store's request log, newest first (at most `limit`, 1–1000, default 100)."""
        query = dict(key_id=key_id, status=status, since=since, until=until, limit=limit)
        return [Record(e) for e in json.loads(self._native.logs(store_id, _dump(query)))]

    def usage(
        self, store_id: str, *, since: Optional[datetime] = None, until: Optional[datetime] = None
    ) -> Record:
        """Requests per key in a period (default: the day before `until`, which defaults to
        now): `requests`, `by_status`, `by_code` and `keys` (busiest first, each a dict of
        `key_id`, `requests`, `errors`, `denied`, `last_at`, `average_latency_us`)."""
        return Record(json.loads(self._native.usage(store_id, _dump(dict(since=since, until=until)))))

    # ---- store entities (SPEC §7) ----------------------------------------------------------

    def create(
        self,
        store_id: str,
        area: str,
        data: Mapping[str, Any],
        *,
        environment: str = "live",
        idempotency_key: Optional[str] = None,
    ) -> Created:
        """Creates an entity. With `idempotency_key` (1-255 visible ASCII characters, a UUID say)
        it is made at most once per key in the store and environment for 24 hours: a retry
        returns what the first call made, as it is now, and makes nothing (`replayed` is then
        True); the key with another area or body raises `ConflictError`."""
        native, replayed = self._native.create_entity(store_id, environment, area, _dump(data), idempotency_key)
        return Created(json.loads(native), replayed)

    def get(self, store_id: str, area: str, id: str, *, environment: str = "live") -> Record:
        return Record(json.loads(self._native.get_entity(store_id, environment, area, id)))

    def list(
        self,
        store_id: str,
        area: str,
        *,
        environment: str = "live",
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> Page:
        return _page(self._native.list_entities(store_id, environment, area, limit, cursor))

    def update(self, store_id: str, area: str, id: str, data: Mapping[str, Any], *, environment: str = "live") -> Record:
        return Record(json.loads(self._native.update_entity(store_id, environment, area, id, _dump(data))))

    def delete(self, store_id: str, area: str, id: str, *, environment: str = "live") -> None:
        self._native.delete_entity(store_id, environment, area, id)

    # ---- customer portal sessions (SPEC §7, seed 001) --------------------------------------

    def create_portal_session(
        self,
        store_id: str,
        customer_id: str,
        *,
        environment: str = "live",
        ttl_seconds: Optional[int] = None,
    ) -> Record:
        """Opens a session for one customer (default 15 minutes, 60 s to a day):
        `{token, expires_at}`, the `cps_…` token this once (only its digest is stored)."""
        fields = {"customer_id": customer_id, "ttl_seconds": _UNSET if ttl_seconds is None else ttl_seconds}
        return Record(json.loads(self._native.create_portal_session(store_id, environment, _dump(fields))))

    def portal_customer(self, token: str) -> Optional[Record]:
        """Whose portal `token` opens (`store_id`, `environment`, `customer_id`), or None for
        an unknown, malformed or expired token alike."""
        found = self._native.portal_customer(token)
        return None if found is None else Record(json.loads(found))

    def portal_list(
        self, token: str, area: str, *, limit: Optional[int] = None, cursor: Optional[str] = None
    ) -> Optional[Page]:
        """A page of the token's customer's `Orders` or `Subscriptions` (nothing else), or None
        as `portal_customer`."""
        found = self._native.portal_list(token, area, limit, cursor)
        return None if found is None else _page(found)

    def portal_sessions(self, store_id: str) -> List[Record]:
        """The store's live sessions, soonest to expire first: `id` (`ps_…`), `environment`,
        `customer_id`, `expires_at`; never their tokens."""
        return [Record(s) for s in json.loads(self._native.portal_sessions(store_id))]

    def end_portal_session(self, store_id: str, session_id: str) -> List[str]:
        """Ends one live session before it expires (audited); NotFoundError when none has
        `session_id`. The ids ended."""
        return self._native.end_portal_sessions(store_id, self.actor, session_id=session_id)

    def end_customer_portal_sessions(self, store_id: str, customer_id: str) -> List[str]:
        """Ends every live session of one customer (audited when any was live). The ids ended."""
        return self._native.end_portal_sessions(store_id, self.actor, customer_id=customer_id)

    # ---- webhooks (SPEC §8) ----------------------------------------------------------------

    def create_webhook(
        self, store_id: str, *, url: str, events: Sequence[str], active: Any = _UNSET
    ) -> Record:
        """Registers an endpoint; the result's `secret` (`whsec_…`) is shown this once."""
        fields = dict(url=url, events=events, active=active)
        return Record(json.loads(self._native.create_webhook(store_id, self.actor, _dump(fields))))

    def rotate_webhook_secret(
        self, store_id: str, webhook_id: str, *, overlap_seconds: Optional[int] = None
    ) -> Record:
        """A new signing secret (the result's `secret`, shown this once). For `overlap_seconds`
        (0 to 604800; default a day) deliveries also carry a signature by the old secret, so
        receivers can switch over without dropping one."""
        fields = {"overlap_seconds": _UNSET if overlap_seconds is None else overlap_seconds}
        return Record(json.loads(self._native.rotate_webhook_secret(store_id, self.actor, webhook_id, _dump(fields))))

    def retry_webhook_delivery(self, store_id: str, webhook_id: str, delivery_id: str) -> Record:
        """Sends a finished delivery once more, now (one attempt, no retries after it): for a
        receiver that was down past the retry schedule. `ConflictError` while the delivery is
        pending or the endpoint is disabled."""
        return Record(json.loads(self._native.retry_webhook_delivery(store_id, webhook_id, delivery_id)))

    def list_webhooks(self, store_id: str) -> List[Record]:
        return [Record(w) for w in json.loads(self._native.list_webhooks(store_id))]

    def get_webhook(self, store_id: str, webhook_id: str) -> Record:
        return Record(json.loads(self._native.get_webhook(store_id, webhook_id)))

    def update_webhook(self, store_id: str, webhook_id: str, **changes: Any) -> Record:
        """Changes `url`, `events` or `active`."""
        return Record(json.loads(self._native.update_webhook(store_id, self.actor, webhook_id, _dump(changes))))

    def delete_webhook(self, store_id: str, webhook_id: str) -> None:
        self._native.delete_webhook(store_id, self.actor, webhook_id)

    def webhook_deliveries(self, store_id: str, webhook_id: str, *, limit: Optional[int] = None) -> List[Record]:
        """The endpoint's deliveries with every attempt, newest first (default 50, at most 500)."""
        return [Record(d) for d in json.loads(self._native.list_webhook_deliveries(store_id, webhook_id, limit))]

    def test_webhook(self, store_id: str, webhook_id: str) -> Record:
        """Sends a signed `webhook.test` event now: `status_code`, `body`, `error`, `duration_ms`."""
        return Record(json.loads(self._native.test_webhook(store_id, webhook_id)))

    def deliver_webhooks(self) -> Record:
        """One delivery pass on this thread: `queued`, `attempted`, `next_due_ms`."""
        queued, attempted, next_due_ms = self._native.deliver_webhooks()
        return Record({"queued": queued, "attempted": attempted, "next_due_ms": next_due_ms})

    def start_webhook_worker(self) -> None:
        """Delivers in a background thread from now on (once per engine)."""
        self._native.start_webhook_worker()
