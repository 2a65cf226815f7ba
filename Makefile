# Developer commands. `make run` and `make test` are the two commands in the README.

PYTHON ?= python3
VENV := .venv
ORT_STAMP := $(VENV)/.onnxruntime-1.32.0
DEV_STAMP := $(VENV)/.dev-requirements
ADDR ?= 127.0.0.1:8080

.PHONY: run test setup setup-dev prometheus postgresql browser-deps models lint bench load fuzz

## Install the pinned ONNX Runtime (once) and serve ./models on $(ADDR).
run: setup
	cargo run --release --bin vigil -- serve --models models --addr $(ADDR)

## Run the whole test suite (unit, integration, tract engine, tritonclient, real Prometheus and
## PostgreSQL, the console in Debian's chromium), then the gateway tests again on PostgreSQL.
test: setup-dev prometheus postgresql browser-deps
	cargo test --all-features
	VIGIL_TEST_STORE=postgres cargo test --all-features $(patsubst %,--test %,$(GATEWAY_TESTS))

## The test binaries that start in-process gateways: `make test` runs them a second time with
## every gateway on the PostgreSQL store (a database each, on a server per binary). The others
## test one store directly (postgres_store, feedback_stores, replicas, durability,
## feedback_loop, deployments' file checks run on files either way), or no store at all.
GATEWAY_TESTS := admin_auth admin_changes admin_cli admin_reports audit bad_input batching \
	console deployments feedback mlflow monitoring overload prometheus repository_extension \
	grpc rescan retraining revisions shadow thresholds tract tritonclient v1_json v2_protocol

## ONNX Runtime 1.32.0 from PyPI into the project-local .venv.
setup: $(ORT_STAMP)
$(ORT_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check onnxruntime==1.32.0
	touch $@

## Pinned Python tooling for tests and model generation (scripts/requirements.txt).
setup-dev: $(DEV_STAMP)
$(DEV_STAMP): scripts/requirements.txt $(ORT_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
	touch $@

## Debian's prometheus binary, which tests/prometheus.rs runs against a gateway (its service is
## not used). Installed once, with sudo when not root.
prometheus:
	@command -v prometheus >/dev/null || { \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }

## Debian's PostgreSQL server binaries, which tests/common/postgres.rs runs in a temporary
## directory (its service is not used). Installed once, with sudo when not root.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

## Debian's chromium and the pinned Playwright + pytest (scripts/requirements-browser.txt) for
## tests/browser/, which tests/browser.rs runs.
browser-deps: setup
	scripts/browser-deps.sh

## Regenerate models/ and tests/fixtures/expected/.
models: setup-dev
	$(VENV)/bin/python scripts/make_models.py

lint:
	cargo fmt --all --check
	cargo clippy --all-targets --all-features -- -D warnings

bench: setup
	cargo bench --bench infer_path

load: setup
	bash benches/load.sh

FUZZ_SECS ?= 600
FUZZ_TARGETS := v2_json v2_binary grpc_infer v1_instances

## Coverage-guided fuzzing of the request decoders (tests/fuzz/: nightly toolchain and
## cargo-fuzz, installed once), FUZZ_SECS seconds per target, from tests/fuzz/seeds; new inputs
## join tests/fuzz/corpus (`cargo +nightly fuzz cmin --fuzz-dir tests/fuzz <target>` shrinks it).
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
	for target in $(FUZZ_TARGETS); do \
		cargo +nightly fuzz run --fuzz-dir tests/fuzz -O $$target tests/fuzz/corpus/$$target \
			tests/fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

