# Every target creates or reuses .venv with the locked dependencies first: nothing is installed by hand.
SHELL := /bin/bash
UV_VERSION := 0.13.8
PY ?= python3
STORAGE ?= s3
BROKER ?= embedded
FORMAT ?= json
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
# Airflow imports 2-3x faster from bytecode (strm list: 2.8 s instead of 6.7 s): the venv is
# compiled at install, and the project's own files may write theirs even where the environment
# says not to.
unexport PYTHONDONTWRITEBYTECODE
UV := $(CURDIR)/.tools/bin/uv

.PHONY: venv kafka demo test compat lint bench up down clean system-deps java-deps install-debs

$(UV):
	$(PY) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

venv: $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode --quiet

kafka: venv java-deps  ## Apache Kafka (pinned in devstack/apache_kafka.py) from Maven Central into .cache/, once
	.venv/bin/python -m devstack.apache_kafka fetch

# FORMAT=avro-parquet (or avro-jsonl, protobuf-parquet, protobuf-jsonl) produces the events through a Schema
# Registry, exports them with value_format/file_format and, for Parquet, queries the files with DuckDB
demo: venv  ## a real export on the embedded defaults (STORAGE=s3|s3-compatible|gcs|azure, BROKER=embedded|apache, FORMAT=json|avro-parquet|...)
	.venv/bin/python scripts/demo.py --storage $(STORAGE) --broker $(BROKER) --format $(FORMAT)

# Debian packages, installed when missing (with sudo unless root): what Apache Kafka needs for `make kafka`,
# `make up` and `make bench`, and what the tests also drive for `make test`.
JAVA_DEBS := openjdk-17-jre-headless maven
TEST_DEBS := chromium docker-compose postgresql redis-server

java-deps:  ## Java 17+ and Maven (Apache Kafka), from Debian when missing
	@$(MAKE) --no-print-directory install-debs DEBS="$(JAVA_DEBS)"

system-deps:  ## every Debian package the tests drive, installed when missing: Java 17+ and Maven, Chromium, docker-compose, PostgreSQL, Redis
	@$(MAKE) --no-print-directory install-debs DEBS="$(JAVA_DEBS) $(TEST_DEBS)"

install-debs:
	@missing=""; \
	  for deb in $(DEBS); do case $$deb in \
	    chromium) command -v chromium >/dev/null || missing="$$missing chromium";; \
	    docker-compose) command -v docker-compose >/dev/null || missing="$$missing docker-compose";; \
	    postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql";; \
	    redis-server) command -v redis-server >/dev/null || missing="$$missing redis-server";; \
	    openjdk-17-jre-headless) java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' || missing="$$missing $$deb";; \
	    maven) command -v mvn >/dev/null || missing="$$missing maven";; \
	  esac; done; \
	  if [ -n "$$missing" ]; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    echo "installing Debian packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	  fi

test: venv system-deps kafka  ## the whole suite on the newest Airflow, then the compatibility subset on each older line
	.venv/bin/ruff check strm_provider dags devstack tests scripts bench docker
	.venv/bin/pytest -p no:cacheprovider -n 2 --dist loadfile
	.venv/bin/python -m devstack.compat test --jobs 2

# LINES="2.11 3.0" for some lines only; each line's environment (.compat/<line>) is built once
compat: venv system-deps kafka  ## the compatibility subset (tests marked compat) on Airflow 2.11, 3.0, 3.1 and 3.2
	.venv/bin/python -m devstack.compat test $(LINES)

lint: venv
	.venv/bin/ruff check strm_provider dags devstack tests scripts bench docker
	.venv/bin/ruff format --check strm_provider dags devstack tests scripts bench docker

bench: venv kafka  ## throughput and memory benchmark, ~10 min (bench/results.json + .png); EVENTS=100000 for a quick run
	.venv/bin/python bench/run.py $(if $(EVENTS),--events $(EVENTS))

# EXPORTERS=1,10 INTERVAL=20s INTERVALS=2 for a quick run; WORKERS=2 on the Celery stack of `make up WORKERS=2`
bench-scale: venv kafka  ## N exporters (1, 50, 200) on a make-up stack, ~45 min: CPU per run, start delay, lag, memory (bench/scale.json + .png)
	.venv/bin/python bench/scale.py $(if $(EXPORTERS),--exporters $(EXPORTERS)) $(if $(INTERVAL),--interval $(INTERVAL)) \
	  $(if $(INTERVALS),--intervals $(INTERVALS)) $(if $(WORKERS),--workers $(WORKERS))

# STRM_AIRFLOW_VERSION=2.11 (or 3.0, 3.1, 3.2) runs the stack on that Airflow line (.compat/<line>);
# INTERVAL=10s makes the demo exporter run that often (when up creates it); WORKERS=2 runs the tasks on two Celery
# workers (CeleryExecutor, PostgreSQL, Redis) instead of the LocalExecutor
STACK_PY = $(if $(STRM_AIRFLOW_VERSION),.compat/$(STRM_AIRFLOW_VERSION)/bin/python,.venv/bin/python)

up: venv kafka  ## the live local stack: Airflow UI (http://127.0.0.1:8080), Kafka, S3, a demo exporter every 30s
	$(if $(STRM_AIRFLOW_VERSION),.venv/bin/python -m devstack.compat build $(STRM_AIRFLOW_VERSION))
	$(STACK_PY) scripts/stack.py up $(if $(INTERVAL),--interval $(INTERVAL)) $(if $(WORKERS),--workers $(WORKERS))

down: venv  ## stop exactly what `make up` started (its PID files); keeps .stack/ for the next `make up`
	$(STACK_PY) scripts/stack.py down

clean:
	rm -rf .venv .tools .demo .stack .compat
