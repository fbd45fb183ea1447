# Two commands do everything on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
N      ?= 10000

DATA   ?= ../shared/data

.PHONY: install browser screenshots bench-web demo test test-unit train eval bench-batch bench-stream services-up services-down services-status setup bench-batch lock clean

# The virtual environment, from the pinned lock file; re-done only when setup.py or the lock changes.
$(STAMP): setup.py requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) browser

## Debian's chromium and its driver for the browser tests (tests/test_web_browser.py: Playwright drives
## /usr/bin/chromium; Playwright's own browser download cannot work offline). Installed with apt-get when missing and
## we are root; otherwise those tests are skipped and this says why.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the browser tests (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "NOTE: $(CHROMIUM) is missing and cannot be installed here (needs root and apt-get):" \
		"the browser tests will be skipped. Install it with: sudo apt-get install chromium chromium-driver"; fi

## Start local services, create topics and index, enrich and index the sample posts, print a summary.
demo: install
	$(BIN)/triage demo

## Install, run the whole test suite against freshly started local services (or TRIAGE_KAFKA_BOOTSTRAP /
## TRIAGE_ES_URL when set), stop them; non-zero exit on any failure.
## Two pytest-xdist workers, whole files each (module fixtures start once): the integration tests mostly wait on
## servers and worker processes, so two of them share the 2 cores well. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile -ra --durations=15 -W ignore::DeprecationWarning

## The fast tests only (under a minute): no Kafka, no Elasticsearch, no transformer model; fake steps and stand-ins.
test-unit: install
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) -m "not integration and not models" -ra -W ignore::DeprecationWarning

## The README's screenshots (docs/screenshots/*.png), taken by the browser tests so they show the real pages.
screenshots: install
	TRIAGE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/test_web_browser.py -n 0 -ra \
		-W ignore::DeprecationWarning

services-up: install
	$(BIN)/triage services up
services-down: install
	$(BIN)/triage services down
services-status: install
	$(BIN)/triage services status
setup: install
	$(BIN)/triage setup

## Throughput and peak memory of batch enrichment (N posts, default 10000), JSONL->JSONL and JSONL->Elasticsearch.
bench-batch: services-up
	$(BIN)/triage bench batch --n $(N)

## The web workspace: N generated posts indexed with cheap fake enrichment, then page and API times of `triage web`.
bench-web: services-up
	$(BIN)/triage bench web --n $(N)

## Streaming: one worker, producer at 20/50/100 posts/s and flat out (DURATION s each, default 60).
DURATION ?= 60
bench-stream: services-up
	$(BIN)/triage bench stream --duration $(DURATION)

## Train the adapters and heads in models/artifacts/ (about 75 min on 2 cores, 7.3 GB peak) from the public train/val/dev splits,
## with the hyperparameters in models/train.yaml (triage train --help: --config, --epochs, --stage intent ...).
train: install
	$(BIN)/triage train --data $(DATA)

## Print every quality figure (public benchmarks from DATA, the team's intent, language and PII sets).
eval: install
	$(BIN)/triage eval --data $(DATA) --precision both

## Refresh requirements.lock from the current environment (after changing setup.py).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' > requirements.lock

clean:
	rm -rf $(VENV) .triage build *.egg-info
