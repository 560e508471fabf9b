# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BUF_VERSION ?= 1.75.0

.PHONY: install run test lint proto tools bench bench-quick bench-floor clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# buf (for `buf lint` in the suite) comes from npm; without npm the lint test skips and says why.
tools: .tools/node_modules/.bin/buf

.tools/node_modules/.bin/buf:
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION); \
	else echo "npm not found: buf lint test will be skipped"; fi

run: install
	$(BIN)/wallet-server dev

test: install tools lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy wallet_server tests scripts bench

# Benchmark: the server in its own process, spawned load generators, the pgbench ceiling.
# More options through BENCH_ARGS, e.g. `make bench BENCH_ARGS="--workers 2"`.
BENCH_ARGS ?=

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

# What a minimal Python gRPC server reaches here, as ratios to its own empty call.
bench-floor: install
	$(BIN)/python -m bench.floor

proto: install
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .tools .wallet-dev build *.egg-info
