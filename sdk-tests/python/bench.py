"""One run, three peers (issue #6):

- `latchkey.Engine.verify` on hot keys (token keys, Orders:View, a path, each charged its own
  limit), every timed call an admission;
- the `limits` package's in-memory `FixedWindowRateLimiter.hit`;
- `djangorestframework-api-key`'s `APIKey.objects.is_valid` on SQLite in memory.

Usage (from the repository root, after `make python`, whose build is a debug one for the
tests, so the extension is rebuilt with optimisations first):
    (cd bindings/python && VIRTUAL_ENV=$PWD/../../target/pyvenv ../../target/pyvenv/bin/maturin develop --release -q)
    target/pyvenv/bin/pip install limits django djangorestframework djangorestframework-api-key
    target/pyvenv/bin/python sdk-tests/python/bench.py

Targets: verify <= 300 ns per call, >= 10x faster than `limits`, >= 1000x faster than the
Django key check. Prints ns per call (best of 5 repeats) and the ratios.

A key may have at most 10,000 requests a minute, and a run makes a million calls in a second,
so the calls go round 1,000 keys (all in cache, as one hot key is): 1,000 calls each, within
every key's budget. No client address is passed (an in-process caller), so no per-IP limit
applies: one address would be refused after its first thousand. The codes seen are printed,
and a refusal fails the run.
"""

import timeit

import latchkey


def best_ns(stmt, number, names, calls_per_run=1):
    runs = timeit.repeat(stmt, number=number, repeat=5, globals=names)
    return min(runs) / (number * calls_per_run) * 1e9


def bench_latchkey():
    eng = latchkey.Engine.memory()
    store, _ = eng.create_store("Bench")
    eng.update_store(store.id, max_scoped_keys=1000)
    keys = [
        eng.create_key(
            store.id,
            name=f"hot {i}",
            permissions={"Orders": ["View"]},
            rate_limit={"limit": 10000, "algorithm": "token_bucket"},
        ).key
        for i in range(1000)
    ]
    verify = eng.verify
    codes = set()
    for key in keys:
        codes.add(verify(key, area="Orders", action="View", path="/api/v1/orders").code)
    # A statement rather than a lambda, so the figure has no extra Python frame per call. The
    # statement goes round the keys in a `for` loop: per call, one loop step, as timeit's own
    # loop adds to the peers' single-call statements (`itertools.cycle` cost 15 ns more).
    stmt = (
        "for key in keys:\n"
        '    verify(key, area="Orders", action="View", path="/api/v1/orders")'
    )
    ns = best_ns(stmt, 190, {"verify": verify, "keys": keys}, calls_per_run=len(keys))
    for key in keys:
        codes.add(verify(key, area="Orders", action="View", path="/api/v1/orders").code)
    assert codes == {"OK"}, f"every call must be admitted, saw {codes}"
    return ns, codes


def bench_limits():
    from limits import parse, storage, strategies

    limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    item = parse("1000000000/minute")
    assert limiter.hit(item, "hot")
    # Statements, as for verify, so no figure carries a lambda's frame.
    return best_ns("limiter.hit(item, 'hot')", 50_000, {"limiter": limiter, "item": item})


def bench_django():
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "rest_framework_api_key",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from rest_framework_api_key.models import APIKey

    _, key = APIKey.objects.create_key(name="hot")
    assert APIKey.objects.is_valid(key)
    return best_ns("APIKey.objects.is_valid(key)", 200, {"APIKey": APIKey, "key": key})


def main():
    verify_ns, codes = bench_latchkey()
    limits_ns = bench_limits()
    django_ns = bench_django()
    print(f"latchkey Engine.verify (hot keys, admitted):     {verify_ns:12.0f} ns/call  (codes seen: {sorted(codes)})")
    print(f"limits FixedWindowRateLimiter.hit (memory):      {limits_ns:12.0f} ns/call  ({limits_ns / verify_ns:.1f}x verify)")
    print(f"djangorestframework-api-key is_valid (sqlite):   {django_ns:12.0f} ns/call  ({django_ns / verify_ns:.0f}x verify)")
    print(f"targets: verify <= 300 ns: {'met' if verify_ns <= 300 else 'NOT met'}; "
          f">= 10x limits: {'met' if limits_ns >= 10 * verify_ns else 'NOT met'}; "
          f">= 1000x django: {'met' if django_ns >= 1000 * verify_ns else 'NOT met'}")


if __name__ == "__main__":
    main()
