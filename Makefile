# The one test command (README, .ci/run): installs what it needs, then checks and tests
# everything in the repository.
.PHONY: test deps lint unit python bench

test: deps lint unit python

# The Python binding is built with maturin into a virtual environment under target/.
PYVENV := $(abspath target/pyvenv)

# Rust comes with the machine (rustup); rustfmt and clippy are added if missing.
deps:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# The default members (core, server); the Python extension is tested through pytest below.
unit:
	cargo test

python:
	@test -x $(PYVENV)/bin/python || python3 -m venv $(PYVENV)
	$(PYVENV)/bin/pip install -q --disable-pip-version-check "maturin>=1.9,<2" "pytest>=8" "fastapi>=0.110" "httpx>=0.27"
	cd bindings/python && VIRTUAL_ENV=$(PYVENV) PATH=$(PYVENV)/bin:$$PATH maturin develop -q
	$(PYVENV)/bin/python -m pytest -q bindings/python/tests

# Benchmarks are not part of `make test`; figures are recorded in BENCHMARKS.md.
bench:
	cargo bench -p latchkey --bench verify
	cargo bench -p latchkey --bench limiter
	cargo bench -p latchkey --bench entities
