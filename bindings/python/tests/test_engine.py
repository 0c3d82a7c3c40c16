"""The Python binding: the SPEC §10 surface, typed errors, decisions, the GIL."""

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import latchkey
from latchkey import ConflictError, NotFoundError, ValidationError


@pytest.fixture
def eng():
    return latchkey.Engine.memory()


@pytest.fixture
def shop(eng):
    store, default_key = eng.create_store("My Shop")
    return store, default_key


def test_the_spec_walkthrough(eng, shop):
    store, default_key = shop
    assert store.name == "My Shop" and len(store.id) == 8
    assert default_key.kind == "default" and default_key.credential.startswith("lk_")
    created = eng.create_key(
        store.id,
        name="ERP",
        permissions={"Orders": ["View"]},
        format="token",
        environment="live",
        rate_limit=None,
        ip_allowlist=None,
        expires_at=None,
    )
    d = eng.verify(created.key, area="Orders", action="View", ip="127.0.0.1", path="/api/v1/orders")
    assert (d.allowed, d.code, d.status, d.message) == (True, "OK", 200, "OK")
    assert d.key_id == created.id and d.store_id == store.id and d.environment == "live"
    assert dict(d.headers)["X-RateLimit-Limit"] == "60"

    denied = eng.verify(created.key, area="Packages", action="Edit", ip="127.0.0.1", path="/api/v1/packages")
    assert (denied.allowed, denied.code, denied.status) == (False, "FORBIDDEN", 403)
    assert denied.message == "Missing permission Packages:Edit"

    eng.update_key(store.id, created.id, active=False)
    assert eng.verify(created.key, area="Orders", action="View").code == "INACTIVE"
    eng.update_key(store.id, created.id, active=True)
    regenerated = eng.regenerate_key(store.id, created.id)
    assert eng.verify(created.key, area="Orders", action="View").code == "INVALID"
    assert eng.verify(regenerated.key, area="Orders", action="View").allowed
    eng.revoke_key(store.id, created.id)
    assert eng.verify(regenerated.key, area="Orders", action="View").code == "INVALID"
    assert [k.id for k in eng.list_keys(store.id)] == [default_key.id]


def test_every_format_and_the_missing_key(eng, shop):
    store, _ = shop
    for fmt in ("token", "hex", "pair"):
        created = eng.create_key(store.id, name=fmt, permissions="orders:read", format=fmt)
        assert eng.verify(created.credential, area="Orders", action="View").allowed, fmt
    missing = eng.verify(None)
    assert (missing.code, missing.status, missing.message) == ("MISSING", 401, "API key required")
    assert eng.verify("lk_nope").code == "INVALID"
    # Everything after the credential is keyword-only, as documented.
    with pytest.raises(TypeError):
        eng.verify("lk_nope", "Orders", "View")
    with pytest.raises(ValidationError) as err:
        eng.verify("lk_nope", area="Nope", action="View", ip="999.0.0.1")
    assert len(err.value.problems) == 2, err.value.problems


def test_verify_takes_its_arguments_as_a_python_function_does(eng, shop):
    """`verify` is a raw fastcall function (bindings/python/src/fast.rs), so its argument rules
    are its own: pinned here against what a `def` with the same signature accepts."""
    import inspect

    store, default_key = shop
    key = eng.create_key(store.id, name="args", permissions="orders:read").key
    assert str(inspect.signature(eng.verify)) == (
        "(credential, *, area=None, action=None, ip=None, path='/')"
    )
    assert eng.verify.__name__ == "verify" and "Decides one request" in eng.verify.__doc__
    # Keyword names built at run time (not interned constants) are matched by their text.
    area, action = "".join(["ar", "ea"]), "".join(["act", "ion"])
    assert eng.verify(key, **{area: "Orders", action: "View"}).allowed
    assert eng.verify(credential=key, area="Orders", action="View", ip=None, path="/x").allowed
    assert eng.verify(key, area=None, action=None).allowed
    cases = {
        "takes 1 positional argument but 2 were given": lambda: eng.verify(key, "Orders"),
        "missing 1 required positional argument: 'credential'": lambda: eng.verify(area="Orders"),
        "unexpected keyword argument 'scope'": lambda: eng.verify(key, scope="Orders"),
        "multiple values for argument 'credential'": lambda: eng.verify(key, credential=key),
        "argument 'ip' must be str or None, not int": lambda: eng.verify(key, ip=127),
        "argument 'credential' must be str or None, not bytes": lambda: eng.verify(key.encode()),
    }
    for message, call in cases.items():
        with pytest.raises(TypeError) as err:
            call()
        assert message in str(err.value), (message, str(err.value))
        # No argument error quotes a credential.
        assert key not in str(err.value)
    # A bound function keeps its engine alive.
    verify = latchkey.Engine.memory().verify
    assert verify(None).code == "MISSING"


def test_errors_are_typed_and_name_every_problem(eng, shop):
    store, default_key = shop
    with pytest.raises(ValidationError) as err:
        eng.create_key(store.id, name="", permissions={"Nope": ["View"], "Orders": ["Fly"]}, format="morse")
    assert err.value.code == "VALIDATION"
    assert len(err.value.problems) >= 3, err.value.problems
    assert isinstance(err.value, latchkey.LatchkeyError)
    with pytest.raises(NotFoundError) as missing:
        eng.get_key(store.id, "key_doesnotexist00")
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(ConflictError):
        eng.revoke_key(store.id, default_key.id)
    with pytest.raises(ValidationError) as bad_args:
        eng.verify(default_key.credential, area="Planets", action="Fly", ip="not-an-ip")
    assert len(bad_args.value.problems) == 3
    with pytest.raises(ValidationError):
        eng.create_key(store.id, name="x", permissions="*", expires_at=datetime(2030, 1, 1))


def test_limits_are_checked_like_every_other_argument(eng, shop):
    # A read's `limit` is a whole number within the core's range, whichever call takes it; a
    # negative or non-integer one is the same ValidationError as in Node, not an OverflowError.
    store, _ = shop
    hook = eng.create_webhook(store.id, url="https://example.com/hook", events=["order.created"])
    reads = {
        "audit": lambda limit: eng.audit(store.id, limit=limit),
        "list": lambda limit: eng.list(store.id, "Packages", limit=limit),
        "logs": lambda limit: eng.logs(store.id, limit=limit),
        "deliveries": lambda limit: eng.webhook_deliveries(store.id, hook.id, limit=limit),
    }
    for name, read in reads.items():
        for bad in (-1, 10**30, True, "5", 2.0):
            with pytest.raises(ValidationError) as err:
                read(bad)
            [problem] = err.value.problems
            assert problem.startswith("limit: "), (name, bad, problem)
        with pytest.raises(ValidationError) as err:
            read(0)
        assert err.value.problems[0].startswith("limit: must be between 1 and "), (name, err.value.problems)
        read(1)
    with pytest.raises(ValidationError) as err:
        eng.audit(store.id, limit=1001)
    assert err.value.problems == ["limit: must be between 1 and 1000"]


def test_expiry_takes_aware_datetimes(eng, shop):
    store, _ = shop
    soon = datetime.now(timezone.utc) + timedelta(days=2)
    created = eng.create_key(store.id, name="short", permissions="*", expires_at=soon)
    assert created.expires_at.startswith(str(soon.year))


def test_secrets_are_shown_once(eng, shop):
    store, _ = shop
    created = eng.create_key(store.id, name="secret", permissions="*")
    assert created.key not in repr(created)
    listed = eng.list_keys(store.id)
    assert all("key" not in k for k in listed)
    assert created.key not in str([k.to_dict() for k in listed])
    assert "key" not in eng.get_key(store.id, created.id)


def test_store_entities(eng, shop):
    store, _ = shop
    pkg = eng.create(store.id, "Packages", {"name": "VIP", "price": {"amount": 999, "currency": "USD"}})
    assert pkg.name == "VIP"
    page = eng.list(store.id, "Packages", limit=10)
    assert [p.id for p in page.items] == [pkg.id] and page.next_cursor is None
    assert eng.update(store.id, "Packages", pkg.id, {"active": False}).active is False
    assert eng.list(store.id, "Packages", environment="test").items == []
    card = eng.create(store.id, "GiftCards", {"balance": {"amount": 500, "currency": "EUR"}})
    assert "code" in card and "code" not in eng.get(store.id, "GiftCards", card.id)
    eng.delete(store.id, "Packages", pkg.id)
    with pytest.raises(NotFoundError):
        eng.get(store.id, "Packages", pkg.id)


def test_portal_sessions_show_one_customer_their_own_orders(eng, shop):
    store, _ = shop
    pkg = eng.create(store.id, "Packages", {"name": "VIP", "price": {"amount": 999, "currency": "USD"}})
    ann = eng.create(store.id, "Customers", {"email": "ann@example.com", "name": "Ann"})
    bob = eng.create(store.id, "Customers", {"email": "bob@example.com", "name": "Bob"})
    for customer in (ann, bob, ann):
        eng.create(store.id, "Orders", {"customer_id": customer.id, "items": [{"package_id": pkg.id, "quantity": 1}]})
    session = eng.create_portal_session(store.id, ann.id, ttl_seconds=600)
    assert session.token.startswith("cps_") and session.expires_at
    assert eng.portal_customer(session.token).to_dict() == {
        "store_id": store.id, "environment": "live", "customer_id": ann.id}
    orders = eng.portal_list(session.token, "Orders", limit=1)
    assert [o.customer_id for o in orders.items] == [ann.id] and orders.next_cursor
    rest = eng.portal_list(session.token, "Orders", cursor=orders.next_cursor)
    assert [o.customer_id for o in rest.items] == [ann.id] and rest.next_cursor is None
    assert eng.portal_list(session.token, "Subscriptions").items == []
    # Anything but a live session's token opens nothing; other areas are not the portal's.
    for token in ("cps_nope", "", session.token + "x"):
        assert eng.portal_customer(token) is None and eng.portal_list(token, "Orders") is None
    with pytest.raises(latchkey.NotAllowedError):
        eng.portal_list(session.token, "Packages")
    # The request is checked as the server checks it, every problem named; nothing is opened.
    with pytest.raises(ValidationError) as bad:
        eng.create_portal_session(store.id, ann.id, ttl_seconds=5)
    assert bad.value.problems == ["ttl_seconds: must be from 60 to 86400"]
    with pytest.raises(NotFoundError):
        eng.create_portal_session(store.id, ann.id, environment="test")
    with pytest.raises(ValidationError):
        eng.portal_list(session.token, "Orders", limit=-1)
    # The store's managers see live sessions without their tokens, and end them.
    other = eng.create_portal_session(store.id, ann.id)
    listed = eng.portal_sessions(store.id)
    assert [s.customer_id for s in listed] == [ann.id, ann.id]
    assert session.token not in repr([s.to_dict() for s in listed])
    assert eng.end_portal_session(store.id, listed[0].id) == [listed[0].id]
    with pytest.raises(NotFoundError):
        eng.end_portal_session(store.id, listed[0].id)
    assert eng.end_customer_portal_sessions(store.id, ann.id) == [listed[1].id]
    assert eng.portal_customer(session.token) is None and eng.portal_customer(other.token) is None
    assert eng.end_customer_portal_sessions(store.id, bob.id) == []
    assert eng.audit(store.id, limit=1)[0].action == "portal_sessions_ended"


def test_a_file_database_survives_reopening(tmp_path):
    path = tmp_path / "shop.redb"
    eng = latchkey.Engine.open(path)
    store, _ = eng.create_store("Durable")
    created = eng.create_key(store.id, name="k", permissions="*")
    del eng
    again = latchkey.Engine.open(path)
    assert again.verify(created.key).allowed


def test_a_file_open_elsewhere_and_a_misbuilt_engine_say_what_to_do(tmp_path):
    path = tmp_path / "shop.redb"
    eng = latchkey.Engine.open(path)
    with pytest.raises(latchkey.StorageError, match="already open"):
        latchkey.Engine.open(path)
    with pytest.raises(TypeError, match=r"Engine\.open\(path\) or Engine\.memory\(\)"):
        latchkey.Engine(str(path))  # type: ignore[arg-type]
    eng.close()
    assert latchkey.Engine.open(path) is not None


def test_commits_release_the_gil(tmp_path):
    """With a long switch interval, another Python thread only runs while the main thread
    has released the GIL; it must make progress during a few durable commits."""
    import sys

    eng = latchkey.Engine.open(tmp_path / "gil.redb")
    store, _ = eng.create_store("GIL")
    stop = threading.Event()
    ticks = [0]

    def count():
        while not stop.is_set():
            ticks[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.2)
    counter = threading.Thread(target=count)
    try:
        counter.start()
        time.sleep(0.01)
        before = ticks[0]
        for i in range(3):
            eng.create_key(store.id, name=f"k{i}", permissions="*")
        during = ticks[0] - before
    finally:
        stop.set()
        counter.join()
        sys.setswitchinterval(interval)
    # Holding the GIL through the commits, the main thread would finish them in a few
    # milliseconds before the 200 ms switch interval let the counter run at all.
    assert during > 10_000, during


def test_close_releases_the_file_and_later_calls_raise_closed(tmp_path):
    path = tmp_path / "shop.redb"
    with latchkey.Engine.open(path) as eng:
        store, default_key = eng.create_store("Closing")
        verify = eng.verify
        # While open, the file is held: a second engine on it is refused.
        with pytest.raises(latchkey.LatchkeyError):
            latchkey.Engine.open(path)
    for call in (
        lambda: eng.list_stores(),
        lambda: eng.flush(),
        lambda: verify(default_key.credential, area="Orders", action="View"),
        lambda: eng.verify(default_key.credential),
    ):
        with pytest.raises(latchkey.ClosedError) as err:
            call()
        assert err.value.code == "CLOSED" and isinstance(err.value, latchkey.LatchkeyError)
    eng.close()  # twice is harmless
    # The file was released with everything written: it opens again, and the key works.
    again = latchkey.Engine.open(path)
    assert again.verify(default_key.credential, area="Orders", action="View").allowed
    assert [s.id for s in again.list_stores()] == [store.id]
    again.close()


def test_close_does_not_wait_for_calls_in_flight(tmp_path):
    # A commit running without the GIL holds its own reference: close returns, the commit
    # completes, and the file is released once it has.
    path = tmp_path / "busy.redb"
    eng = latchkey.Engine.open(path)
    store, _ = eng.create_store("Busy")
    done = []
    first = threading.Event()

    def create_many():
        try:
            for i in range(50):
                eng.create(store.id, "Packages", {"name": f"p{i}", "price": {"amount": 1, "currency": "USD"}})
                first.set()
        except latchkey.ClosedError:
            done.append("closed")
        else:
            done.append("all")

    worker = threading.Thread(target=create_many)
    worker.start()
    assert first.wait(30)
    eng.close()
    worker.join()
    assert done in (["closed"], ["all"])
    reopened = latchkey.Engine.open(path)
    packages = reopened.list(store.id, "Packages", limit=100).items
    assert 0 < len(packages) <= 50
    reopened.close()


def test_redact_masks_credentials_in_text_without_an_engine():
    eng = latchkey.Engine.memory()
    store, default = eng.create_store("Logs")
    key = default.key
    digest = "0123456789abcdef" * 4
    line = f"GET /api/v1/orders/{key} 404 sha256={digest}"
    masked = key[: key.rindex("_") + 1] + "…" + key[-4:]
    assert latchkey.redact(line) == f"GET /api/v1/orders/{masked} 404 sha256={digest}"
    assert latchkey.redact(line, hex=True) == f"GET /api/v1/orders/{masked} 404 sha256=…cdef"
    assert latchkey.redact("nothing here") == "nothing here"
    with pytest.raises(latchkey.ValidationError) as err:
        latchkey.redact(b"bytes", hex="yes")  # type: ignore[arg-type]
    assert [p.split(":")[0] for p in err.value.problems] == ["text", "hex"]


def test_check_leaks_names_and_stops_pasted_credentials_and_names_bad_arguments():
    eng = latchkey.Engine.memory()
    store, _ = eng.create_store("Leaky")
    pair = eng.create_key(store.id, name="p", permissions="orders:read", format="pair")
    text = f"WC_KEY={pair.consumer_key}\nWC_SECRET={pair.consumer_secret}\n"
    (found,) = eng.check_leaks(text)
    assert found.to_dict() == {
        "line": 2,
        "shape": "pair_secret",
        "masked": "cs_…" + pair.consumer_secret[-4:],
        "status": "live",
        "key_id": pair.id,
        "store_id": store.id,
        "replaced": False,
        "last_used_at": None,
        "last_used_ip": None,
        "error": None,
    }
    assert pair.consumer_secret not in repr(found)
    (stopped,) = eng.check_leaks(text, stop=True)
    assert stopped.status == "revoked"
    assert eng.verify(pair.credential).code == "INVALID"
    with pytest.raises(latchkey.ValidationError) as err:
        eng.check_leaks(42, stop="yes")  # type: ignore[arg-type]
    assert [p.split(":")[0] for p in err.value.problems] == ["text", "stop"]
