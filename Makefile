# Quick start: `make demo` then `make test`. Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PREFECT_HOME ?= $(CURDIR)/.integrity/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-all bench clean browser

$(BIN)/integrity: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps invisible-watermark==0.2.0
	touch $(BIN)/integrity

venv: $(BIN)/integrity

demo: venv
	rm -rf runs/demo examples/.work
	mkdir -p examples/.work && cp -r examples/corpus examples/.work/corpus
	-$(BIN)/integrity gate examples/.work/corpus --out runs/demo --policy examples/policy.yaml; \
	  echo "gate exit code: $$? (0 pass, 1 warn, 2 fail, 3 could not run)"
	@echo "report: $(CURDIR)/runs/demo/report.html"
	@echo "console: $(BIN)/integrity console   (serves .integrity/demo on http://127.0.0.1:8765)"

# The console's browser tests drive Debian's headless chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || echo "warning: Debian's chromium is not installed (needs root: apt-get install chromium); the browser tests will be skipped"

test: venv browser
	$(BIN)/python -m pytest -q

test-all: venv browser
	$(BIN)/python -m pytest -q -m ""

bench: venv
	$(BIN)/python benchmarks/spine.py

clean:
	rm -rf runs .integrity examples/.work
