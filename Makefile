# The two commands of the README:  `make run`  and  `make test`.
# Each creates .venv and installs what is missing first, so both work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests never touch the network or your own Hugging Face cache. They run on WORKERS processes (pytest-xdist),
# each with one torch thread: two workers on two cores take about 60% of one worker's time.
WORKERS ?= 2
TEST_ENV := HF_HUB_OFFLINE=1 HF_HUB_CACHE=$(CURDIR)/.cache/hub-test TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg OMP_NUM_THREADS=1
PYTEST   := $(TEST_ENV) $(BIN)/python -m pytest -n $(WORKERS) --dist worksteal

.PHONY: venv run test browser slow bench export

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,peer,ray]'
	touch $(STAMP)

## The main job: every pipeline stage on the embedded demo model, then the report.
run: venv
	$(BIN)/llm-biology run

## The test suite: package in sync with the notebooks, every notebook's tests, pytest.
test: venv browser
	$(PYTEST)

## Chromium for the browser test of the report (Debian's package; skipped with a note where apt is not usable).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium is not installed and cannot be installed here: the browser test will be skipped"

## Slow checks too (demo training smoke, long runs).
slow: venv
	LLMB_TEST_FLAGS=slow $(PYTEST)

## Notebooks -> package: nbdev-export, then the stage templates' parameters (from RunConfig) and their shipped copies.
export: venv
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean
	$(BIN)/python -c "from llm_biology.cli import sync_templates; sync_templates('circuit_nbs', 'llm_biology/assets/templates')"

bench: venv
	$(BIN)/python bench/bench_baseline.py
	$(BIN)/python bench/bench_attribution.py
