"""One run, three peers (issue #6):

- `latchkey.Engine.verify` on a hot key (token key, Orders:View, with an IP and a path);
- the `limits` package's in-memory `FixedWindowRateLimiter.hit`;
- `djangorestframework-api-key`'s `APIKey.objects.is_valid` on SQLite in memory.

Usage (from the repository root, after `make python`):
    target/pyvenv/bin/pip install limits django djangorestframework djangorestframework-api-key
    target/pyvenv/bin/python sdk-tests/python/bench.py

Targets: verify <= 300 ns per call, >= 10x faster than `limits`, >= 1000x faster than the
Django key check. Prints ns per call (best of 5 repeats) and the ratios.
"""

import timeit

import latchkey


def best_ns(stmt, number):
    runs = timeit.repeat(stmt, number=number, repeat=5)
    return min(runs) / number * 1e9


def bench_latchkey():
    eng = latchkey.Engine.memory()
    store, _ = eng.create_store("Bench")
    key = eng.create_key(
        store.id,
        name="hot",
        permissions={"Orders": ["View"]},
        rate_limit={"limit": 10000, "algorithm": "token_bucket"},
    ).key
    verify = eng.verify
    first = verify(key, area="Orders", action="View", ip="203.0.113.7", path="/api/v1/orders")
    assert first.allowed, first
    ns = best_ns(lambda: verify(key, area="Orders", action="View", ip="203.0.113.7", path="/api/v1/orders"), 200_000)
    codes = {verify(key, area="Orders", action="View", ip="203.0.113.7", path="/api/v1/orders").code for _ in range(3)}
    return ns, codes


def bench_limits():
    from limits import parse, storage, strategies

    limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    item = parse("1000000000/minute")
    assert limiter.hit(item, "hot")
    return best_ns(lambda: limiter.hit(item, "hot"), 50_000)


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
    return best_ns(lambda: APIKey.objects.is_valid(key), 200)


def main():
    verify_ns, codes = bench_latchkey()
    limits_ns = bench_limits()
    django_ns = bench_django()
    print(f"latchkey Engine.verify (hot key):                {verify_ns:12.0f} ns/call  (codes seen: {sorted(codes)})")
    print(f"limits FixedWindowRateLimiter.hit (memory):      {limits_ns:12.0f} ns/call  ({limits_ns / verify_ns:.1f}x verify)")
    print(f"djangorestframework-api-key is_valid (sqlite):   {django_ns:12.0f} ns/call  ({django_ns / verify_ns:.0f}x verify)")
    print(f"targets: verify <= 300 ns: {'met' if verify_ns <= 300 else 'NOT met'}; "
          f">= 10x limits: {'met' if limits_ns >= 10 * verify_ns else 'NOT met'}; "
          f">= 1000x django: {'met' if django_ns >= 1000 * verify_ns else 'NOT met'}")


if __name__ == "__main__":
    main()
