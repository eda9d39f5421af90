# Every target creates or reuses .venv with the locked dependencies first: nothing is installed by hand.
SHELL := /bin/bash
UV_VERSION := 0.13.8
PY ?= python3
STORAGE ?= s3
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
UV := $(CURDIR)/.tools/bin/uv

.PHONY: venv demo test lint bench up down clean

$(UV):
	$(PY) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

venv: $(UV)
	$(UV) sync --frozen --all-extras --quiet

demo: venv  ## a real export on the embedded defaults (STORAGE=s3|s3-compatible|gcs|azure)
	.venv/bin/python scripts/demo.py --storage $(STORAGE)

test: venv  ## the whole suite, against real servers started by the tests
	.venv/bin/ruff check strm_provider dags tests scripts
	.venv/bin/pytest -p no:cacheprovider

lint: venv
	.venv/bin/ruff check strm_provider dags tests scripts
	.venv/bin/ruff format --check strm_provider dags tests scripts

clean:
	rm -rf .venv .tools .demo .stack
