# Two commands do everything on a fresh machine: `make run` and `make test`. `make bench` measures.
# Tool versions are pinned: uv below, Python packages in uv.lock, node packages in package-lock.json.

UV_VERSION := 0.13.8
UV := .tools/bin/uv
RUN := $(UV) run --locked

.PHONY: run test bench setup prometheus-tools contracts lint typecheck unit clean

run: setup ## devnet (anvil + protocol + 20 accounts) + the keeper daemon + a WETH crash, until Ctrl-C
	$(RUN) keeper devnet --accounts 20 --keeper --crash WETH:-30%

test: setup prometheus-tools lint typecheck ## everything CI checks
	$(RUN) pytest

bench: setup ## performance at 10,000 and 100,000 accounts, keeper vs two baselines; JSON in bench/results/
	$(RUN) python -m bench

# promtool checks the alert rules and the metrics exposition; a real Prometheus scrapes the keeper
# in one test. Debian's package has both; installed here when missing (root, or sudo).
prometheus-tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing Debian's prometheus package (promtool + prometheus) ..."; \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus >/dev/null; }

setup: node_modules/.installed .venv/.installed

contracts: node_modules/.installed ## recompile contracts/src into keeper/protocol/artifacts
	node contracts/build.mjs

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: setup
	$(RUN) mypy

unit: setup ## the tests that need no chain
	$(RUN) pytest tests/unit

clean:
	rm -rf .venv .tools node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis .devnet

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@
