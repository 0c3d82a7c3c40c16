#!/usr/bin/env python3
"""Schema conformance (issue #10): schemathesis against a live server's /openapi.json.

Runs schemathesis in four passes (see `passes`), each on a fresh `latchkey serve --dev` on a
free loopback port: the keyed API with the printed key, the management API with the printed
token, the key routes, and every route without credentials. The checks are
`not_a_server_error` (no 5xx for any input), `response_schema_conformance` and
`response_headers_conformance` (every answer matches the document) and
`negative_data_rejection` (input outside the schema is refused).
Exit status: schemathesis's, the first non-zero one.

    python3 tests/schema/schema.py [--st PATH] [--binary PATH] [--max-examples N]
"""

from __future__ import annotations

import argparse
import atexit
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "not_a_server_error,response_schema_conformance,response_headers_conformance,negative_data_rejection"


def start(binary: Path, *extra: str) -> tuple[subprocess.Popen, str, dict]:
    """`serve --dev` (with `extra` flags) on a free loopback port and a database of its own: the
    process, its base URL and the banner's store, API key and admin token."""
    # No per-IP route limits and no brute-force limit: thousands of requests from one address
    # (hundreds of them refused 401, which the brute-force limit counts) would otherwise be
    # 429s, which are correct answers but test nothing behind them.
    # A fresh database each time (removed when this script exits): `--dev` reuses the store it
    # made in a database before.
    db = Path(tempfile.mkdtemp(prefix="latchkey-schema-")) / "schema.redb"
    atexit.register(shutil.rmtree, db.parent, ignore_errors=True)
    proc = subprocess.Popen([str(binary), "serve", "--dev", "--no-ip-scopes", "--auth-failures", "off",
                             *extra, "--listen", "127.0.0.1:0", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = {}
    assert proc.stdout and proc.stderr
    for line in proc.stdout:
        match = re.match(r"\s+(store|API key|admin token):\s+(\S+)", line)
        if match:
            banner[match[1]] = match[2]
        if len(banner) == 3:
            break
    for line in proc.stderr:
        if "listening on http://" in line:
            base = line.rsplit(" ", 1)[1].strip()
            break
    else:
        raise RuntimeError("the server did not start")
    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=lambda s=stream: [None for _ in s], daemon=True).start()
    return proc, base, banner


def passes(banner: dict) -> dict[str, list[str]]:
    """schemathesis arguments of each pass, by name. Each pass gets a fresh server: the
    stateful phase chains real ids, so the routes that may revoke or regenerate the key a pass
    runs with (`/api/v1/api-keys…`) get a pass of their own, after the rest of the keyed API."""
    key = ["-H", f"X-Api-Key: {banner['API key']}"]
    admin = ["-H", f"Authorization: Bearer {banner['admin token']}"]
    return {
        "the keyed API with its key": [*key, "--include-path-regex", "^/api/v1/",
                                       "--exclude-path-regex", "^/api/v1/api-keys/"],
        "the management API with its token": [*admin, "--include-path-regex", "^/api/(stores|meta)"],
        "the keyed API's own keys, revocation and regeneration included": [
            *key, "--include-path-regex", "^/api/v1/api-keys"],
        "every route without credentials": [],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--st", default=str(ROOT / "target" / "pyvenv" / "bin" / "st"))
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "debug" / "latchkey")
    parser.add_argument("--max-examples", type=int, default=20)
    args = parser.parse_args()
    status = 0
    for index in range(4):
        proc, base, banner = start(args.binary)
        try:
            # The default key's store gets room for the run (60 requests a minute by default).
            patch = urllib.request.Request(
                f"{base}/api/stores/{banner['store']}", method="PATCH",
                data=json.dumps({"default_rate_limit": {"limit": 10000, "window_seconds": 60,
                                                        "algorithm": "fixed_window"}}).encode(),
                headers={"Authorization": f"Bearer {banner['admin token']}", "Content-Type": "application/json"})
            urllib.request.urlopen(patch).read()
            name, extra = list(passes(banner).items())[index]
            print(f"== schemathesis: {name}", flush=True)
            code = subprocess.call([args.st, "run", f"{base}/openapi.json", "--checks", CHECKS,
                                    "--max-examples", str(args.max_examples), "--seed", "1", *extra])
            status = status or code
        finally:
            proc.terminate()
            proc.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
