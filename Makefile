# The one test command (README, .ci/run): installs what it needs, then checks and tests
# everything in the repository.
.PHONY: test deps lint unit bench

test: deps lint unit

# Rust comes with the machine (rustup); rustfmt and clippy are added if missing.
deps:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace

# Benchmarks are not part of `make test`; figures are recorded in BENCHMARKS.md.
bench:
	cargo bench -p latchkey --bench verify
	cargo bench -p latchkey --bench limiter
	cargo bench -p latchkey --bench entities
