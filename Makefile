# The one test command (README, .ci/run): installs what it needs, then checks and tests
# everything in the repository.
.PHONY: test deps lint unit crash python schema node browser fuzz screenshots bench

test: deps lint unit crash python schema node browser fuzz

# One full run gains nothing from incremental caches (about 1 GB under target/debug).
test: export CARGO_INCREMENTAL = 0

# The Python binding is built with maturin into a virtual environment under target/.
PYVENV := $(abspath target/pyvenv)

# Rust comes with the machine (rustup); rustfmt and clippy are added if missing.
deps:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

lint:
	cargo fmt --all --check
	cd fuzz && cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd fuzz && cargo clippy --quiet --all-targets -- -D warnings

# The default members (core, server), and the Rust-only unit tests of the Node binding (its
# JS tests run under `node --test` below); the Python extension is tested through pytest.
unit:
	cargo test
	cargo test -p latchkey-node --lib

# kill -9 under concurrent key creations and revocations, 5 cycles (the long form is
# `python3 tests/crash/crash.py --cycles 100`; figures in RELIABILITY.md).
crash:
	cargo build -q -p latchkey-server
	python3 tests/crash/crash.py --cycles 5

# The ASGI tests use Starlette's TestClient, which wants `httpx2` from Starlette 1.10 on (plain
# `httpx` is deprecated there) and `httpx` before it: both are installed, so either resolves.
python:
	@test -x $(PYVENV)/bin/python || python3 -m venv $(PYVENV)
	$(PYVENV)/bin/pip install -q --disable-pip-version-check "maturin>=1.9,<2" "pytest>=8" "fastapi>=0.110" "httpx>=0.27" "httpx2>=2" "standardwebhooks>=1.0" "schemathesis>=4,<5" "jsonschema-rs>=0.20" "mypy>=1.10"
	cd bindings/python && VIRTUAL_ENV=$(PYVENV) PATH=$(PYVENV)/bin:$$PATH maturin develop -q
	# The package's annotations and stubs, as typed code using it sees them.
	$(PYVENV)/bin/mypy --strict bindings/python/python/latchkey bindings/python/tests/typed_usage.py
	$(PYVENV)/bin/python -m pytest -q bindings/python/tests sdk-tests/python

# schemathesis against a live server's /openapi.json, with and without credentials: no 5xx,
# every answer matches the document, input outside it is refused. Then the seeds' flows with
# real data, each answer validated against the document (what generated input never reaches:
# orders, subscriptions, portal sessions, webhook deliveries).
schema: python
	cargo build -q -p latchkey-server
	$(PYVENV)/bin/python tests/schema/schema.py --st $(PYVENV)/bin/st
	$(PYVENV)/bin/python tests/schema/flows.py

# The Node addon is built by napi-rs; the committed native.js / native.d.ts must be what the
# build generates, so they are compared with a fresh build. Then the package's declarations
# are type-checked against a usage file, and node --test runs the scenarios and the rest.
NODEGEN := $(abspath target/node-generated)
node:
	@command -v node >/dev/null || { echo "node not found: install Node.js 20"; exit 1; }
	# `npm install` (which keeps to the lock file) rather than `npm ci`: npm 11's ci rejects
	# this lock for optional per-platform packages of @napi-rs/cli's own dependencies.
	cd bindings/node && npm install --no-audit --no-fund --loglevel=error
	cd sdk-tests/node && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(NODEGEN) && cp bindings/node/native.js bindings/node/native.d.ts $(NODEGEN)/
	cd bindings/node && npm run --silent build
	@cmp -s $(NODEGEN)/native.d.ts bindings/node/native.d.ts && cmp -s $(NODEGEN)/native.js bindings/node/native.js \
	  || { echo "bindings/node/native.d.ts or native.js is stale: the build regenerated it; commit the new files"; exit 1; }
	cd sdk-tests/node && npx tsc -p .
	cd sdk-tests/node && node --test

# The /dashboard console in headless Chromium: Debian's package (installed with apt-get when
# missing) driven by playwright-core, against the binary `cargo test` built.
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }
	cargo build -q -p latchkey-server
	cd sdk-tests/browser && npm ci --no-audit --no-fund --loglevel=error
	cd sdk-tests/browser && node --test

# Every fuzz harness (fuzz/src/lib.rs) over its seeds and their mutations, then AFL++ on each
# for 60 s: cargo-afl is installed if missing and builds the instrumented targets on the stable
# toolchain. FUZZ_SECONDS=600 for a long run (figures in RELIABILITY.md).
fuzz:
	cd fuzz && cargo test --quiet
	fuzz/run.sh

# Rewrites the README's screenshots (docs/screenshots/) from a browser test run.
screenshots:
	cd sdk-tests/browser && SCREENSHOTS_DIR=docs/screenshots node --test

# Benchmarks are not part of `make test`; figures are recorded in BENCHMARKS.md.
bench:
	cargo bench -p latchkey --bench verify
	cargo bench -p latchkey --bench limiter
	cargo bench -p latchkey --bench entities
	cargo bench -p latchkey --bench logs
	cargo bench -p latchkey --bench expiry
	cargo bench -p latchkey-server --bench routes
