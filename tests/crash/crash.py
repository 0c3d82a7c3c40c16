#!/usr/bin/env python3
"""Crash durability of the `latchkey` server (issue #10, SPEC §11).

Runs the real binary on a database file while several clients create and revoke keys over
HTTP, kills it with SIGKILL at a random moment, restarts it, and checks the promise of an
acknowledged write:

- every key whose creation was answered 201 still authenticates;
- no key whose revocation was answered 200 authenticates again.

Requests in flight at the kill were never acknowledged, so either outcome is allowed for them.
Each cycle checks the keys acknowledged in the cycle before the crash plus a random sample of
older ones; the end checks every key. Exit status 1 on any violation.

    python3 tests/crash/crash.py --cycles 5      # short form (part of `make test`)
    python3 tests/crash/crash.py --cycles 100    # long form (figures in RELIABILITY.md)

Standard library only. Checks send a random `X-Forwarded-For` through a trusted loopback
proxy so the per-IP brute-force limit never answers for a revoked key's 401.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
SECRET = "crash-test-secret-of-at-least-32-bytes"


@dataclass
class Ledger:
    """What the server acknowledged. Guarded by `lock`."""

    created: Dict[str, str] = field(default_factory=dict)  # key id -> credential
    revoked: Dict[str, str] = field(default_factory=dict)
    unknown: set = field(default_factory=set)  # a revoke in flight at the kill
    acked_creations: int = 0
    acked_revocations: int = 0
    fresh: List[str] = field(default_factory=list)  # acknowledged this cycle
    lock: threading.Lock = field(default_factory=threading.Lock)


class Server:
    def __init__(self, binary: Path, db: Path) -> None:
        env = dict(os.environ, LATCHKEY_JWT_SECRET=SECRET)
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--db", str(db), "--listen", "127.0.0.1:0",
             "--trusted-proxy", "127.0.0.1", "--no-ip-scopes"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "listening on http://" in line:
                host, port = line.rsplit("http://", 1)[1].strip().rsplit(":", 1)
                self.host, self.port = host, int(port)
                break
        else:
            raise RuntimeError(f"the server exited ({self.proc.wait()}) before listening")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def request(conn: http.client.HTTPConnection, method: str, path: str, headers: Dict[str, str],
            body: Optional[dict] = None) -> Tuple[int, dict]:
    data = None if body is None else json.dumps(body)
    if data is not None:
        headers = dict(headers, **{"Content-Type": "application/json"})
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw) if raw else {}
    except ValueError:
        return response.status, {}


def admin_token(binary: Path) -> str:
    out = subprocess.run([str(binary), "admin-token", "--jwt-secret", SECRET, "--ttl", "86400"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def client(server: Server, token: str, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    """Creates keys in its own store and revokes some of them until the server dies."""
    admin = {"Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    mine: List[str] = []
    try:
        status, body = request(conn, "POST", "/api/stores", admin, {"name": "crash"})
        if status != 201:
            return
        store = body["data"]["store"]["id"]
        status, _ = request(conn, "PATCH", f"/api/stores/{store}", admin, {"max_scoped_keys": 10000})
        if status != 200:
            return
        while not stop.is_set():
            if mine and rng.random() < 0.3:
                key_id = mine.pop(rng.randrange(len(mine)))
                try:
                    status, _ = request(conn, "DELETE", f"/api/stores/{store}/api-keys/{key_id}", admin)
                except (OSError, http.client.HTTPException):
                    with ledger.lock:
                        ledger.unknown.add(key_id)
                    raise
                if status == 200:
                    with ledger.lock:
                        ledger.revoked[key_id] = ledger.created.pop(key_id)
                        ledger.acked_revocations += 1
                        ledger.fresh.append(key_id)
            else:
                status, body = request(conn, "POST", f"/api/stores/{store}/api-keys", admin,
                                       {"name": "k", "permissions": {"Packages": ["View"]}})
                if status == 201:
                    key_id = body["data"]["id"]
                    with ledger.lock:
                        ledger.created[key_id] = body["data"]["key"]
                        ledger.acked_creations += 1
                        ledger.fresh.append(key_id)
                    mine.append(key_id)
    except (OSError, http.client.HTTPException):
        pass  # the server was killed: whatever was in flight is unacknowledged
    finally:
        conn.close()


def authenticates(conn: http.client.HTTPConnection, credential: str, rng: random.Random) -> bool:
    ip = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    status, _ = request(conn, "GET", "/api/v1/packages", {"X-Api-Key": credential, "X-Forwarded-For": ip})
    if status not in (200, 401, 429):
        raise RuntimeError(f"unexpected status {status}")
    return status != 401  # 429 comes only after every other check passed


def check(server: Server, ledger: Ledger, ids: List[str], rng: random.Random) -> Tuple[int, int, List[str]]:
    """Returns (lost creations, resurrected revocations, problems) among `ids`."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    lost = resurrected = 0
    problems: List[str] = []
    try:
        for key_id in ids:
            if key_id in ledger.unknown:
                continue
            if key_id in ledger.created and not authenticates(conn, ledger.created[key_id], rng):
                lost += 1
                problems.append(f"acknowledged creation lost: {key_id}")
            elif key_id in ledger.revoked and authenticates(conn, ledger.revoked[key_id], rng):
                resurrected += 1
                problems.append(f"acknowledged revocation undone: {key_id}")
    finally:
        conn.close()
    return lost, resurrected, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "debug" / "latchkey")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--sample", type=int, default=200, help="older keys re-checked each cycle")
    args = parser.parse_args()
    problems = [f"--{name}: must be at least 1" for name in ("cycles", "clients") if getattr(args, name) < 1]
    if not args.binary.is_file():
        problems.append(f"--binary: {args.binary} does not exist (cargo build -p latchkey-server)")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    token = admin_token(args.binary)
    ledger = Ledger()
    started = time.monotonic()
    lost = resurrected = 0
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "crash.redb"
        for cycle in range(1, args.cycles + 1):
            server = Server(args.binary, db)
            if cycle > 1:
                with ledger.lock:
                    older = [k for k in list(ledger.created) + list(ledger.revoked) if k not in ledger.fresh]
                    ids = ledger.fresh + rng.sample(older, min(args.sample, len(older)))
                    ledger.fresh = []
                l, r, found = check(server, ledger, ids, rng)
                lost, resurrected = lost + l, resurrected + r
                for problem in found[:10]:
                    print(f"cycle {cycle}: {problem}", file=sys.stderr)
            stop = threading.Event()
            threads = [threading.Thread(target=client, args=(server, token, ledger, stop, random.Random(rng.random())))
                       for _ in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 1.5))
            server.kill9()
            stop.set()
            for t in threads:
                t.join()
        server = Server(args.binary, db)
        with ledger.lock:
            everything = list(ledger.created) + list(ledger.revoked)
        l, r, found = check(server, ledger, everything, rng)
        lost, resurrected = lost + l, resurrected + r
        for problem in found[:10]:
            print(f"final: {problem}", file=sys.stderr)
        server.kill9()
    elapsed = time.monotonic() - started
    print(json.dumps({
        "cycles": args.cycles,
        "clients": args.clients,
        "seed": seed,
        "acknowledged_creations": ledger.acked_creations,
        "acknowledged_revocations": ledger.acked_revocations,
        "keys_checked_at_the_end": len(everything),
        "lost_creations": lost,
        "resurrected_revocations": resurrected,
        "seconds": round(elapsed, 1),
    }))
    return 1 if lost or resurrected else 0


if __name__ == "__main__":
    sys.exit(main())
