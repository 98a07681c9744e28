# Self-documenting: `make` lists the targets (lines with ##).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY        ?= python3
VENV      := .venv
PYTHON    := $(VENV)/bin/python
CONFIG    ?= conf/local.yaml
WAREHOUSE ?= ./warehouse
SOURCE    ?= synthetic
INPUT     ?=
ROWS      ?= 20000
SEED      ?= 42
MASTER    ?= local[2]
# Run date per source: the day after the data ends, so every order is history.
DATE_synthetic     := 2024-06-29
DATE_olist         := 2018-09-01
DATE_online_retail := 2011-07-01
DATE_canonical     := $(shell date -u +%F)
DATE      ?= $(DATE_$(SOURCE))
# Evaluation cutoff per source (history before it, truth in the HORIZON days after).
CUTOFF_synthetic     := 2024-05-01
CUTOFF_olist         := 2018-08-01
CUTOFF_online_retail := 2011-06-01
CUTOFF    ?= $(CUTOFF_$(SOURCE))
HORIZON   ?= 28
K         ?= 10
# pytest-xdist workers for make test and test-fast. Each takes whole modules (so a module's
# fixtures are built once per worker) in collection order, which puts the longest modules first
# (tests/conftest.py LONGEST_FIRST; README: Development). 0: every test in this process.
TEST_WORKERS ?= 2
XDIST_ARGS = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

export SPARK_LOCAL_IP        := 127.0.0.1
export PYSPARK_PYTHON        := $(abspath $(PYTHON))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PYTHON))
export HF_HUB_OFFLINE        := 1
export TRANSFORMERS_OFFLINE  := 1
export PYTHONUNBUFFERED      := 1

# Every spark-submit in this Makefile uses these flags (Delta's jars come from .jars/).
DELTA_JARS = $(shell ls .jars/*.jar 2>/dev/null | paste -sd, -)
# The driver JVM's heap (in local mode the executors live in it too): spark-submit sets it
# before the JVM starts, so conf/*.yaml's spark.driver.memory cannot.
DRIVER_MEMORY ?= 4g
# What stpipe/session.py gives a driver it starts: the throughput collector in local mode (the
# driver's JVM runs the tasks too) and the class archive setup made.
DRIVER_JAVA_OPTS = $(strip $(if $(filter local%,$(MASTER)),-XX:+UseParallelGC) \
	$(if $(wildcard .jars/spark-classes.jsa),-XX:SharedArchiveFile=$(abspath .jars/spark-classes.jsa)))
SPARK_SUBMIT_FLAGS = --master $(MASTER) --driver-memory $(DRIVER_MEMORY) --jars $(DELTA_JARS) \
	--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
	--conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
	--conf spark.sql.session.timeZone=UTC \
	$(if $(DRIVER_JAVA_OPTS),--driver-java-options '$(DRIVER_JAVA_OPTS)')
SPARK_SUBMIT = $(VENV)/bin/spark-submit $(SPARK_SUBMIT_FLAGS)
JOB_ARGS = --config $(CONFIG) --warehouse $(WAREHOUSE) --date $(DATE)
EVAL_SOURCE ?= $(if $(filter-out synthetic,$(SOURCE)),$(SOURCE),online_retail)
# CUTOFF=D on the command line wins; otherwise the evaluated source's default.
EVAL_CUTOFF = $(if $(filter command line environment,$(origin CUTOFF)),$(CUTOFF),$(CUTOFF_$(EVAL_SOURCE)))
EVAL_INPUT  ?= $(if $(INPUT),$(INPUT),../shared/datasets/uci_online_retail_2011h1/online_retail_2011h1.csv.gz)
# FULL_REFRESH=1: re-read the whole source and replace its slices (default: merge what is new)
FULL_REFRESH ?=
INGEST_ARGS = --source $(SOURCE) $(if $(INPUT),--input $(INPUT)) --rows $(ROWS) --seed $(SEED) \
	$(if $(FULL_REFRESH),--full-refresh)

.PHONY: help setup run nightly ingest forget test test-fast lint bench notebooks evaluate gpu-bench package clean

help: ## show this list
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

# The venv keeps pip (make package's wheel); the pinned dependencies go in with uv, which installs
# the same wheels as pip in a fraction of the time (README: Two commands). uv first tries its own
# cache alone (--offline: on a machine that installed them before, seconds, and no rebuild of
# pyspark's source distribution), then the index. INSTALLER=pip uses pip alone, e.g. behind a
# package mirror named in pip.conf (uv reads UV_DEFAULT_INDEX instead). uv, unlike pip, leaves
# the packages uncompiled by default, and where PYTHONDONTWRITEBYTECODE is set (this machine,
# many container images) nothing ever writes their bytecode: every process, each Spark Python
# worker included, then compiles what it imports (torch and transformers: 6 s of a 11.7 s model
# load). --compile-bytecode does it once, at install (docs/experiments.md: Speed of the nightly).
INSTALLER ?= uv
UV_VERSION := 0.13.10
UV_INSTALL = $(VENV)/bin/uv pip install --python $(PYTHON) --compile-bytecode -e '.[dev]'
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
ifeq ($(INSTALLER),pip)
	$(PYTHON) -m pip install -e '.[dev]'
else
	$(PYTHON) -m pip install 'uv==$(UV_VERSION)'
	@echo "$(UV_INSTALL) --offline"
	@$(UV_INSTALL) --offline 2>$(VENV)/uv-offline.log && cat $(VENV)/uv-offline.log || { \
		echo "uv: some packages are not in uv's cache ($(VENV)/uv-offline.log); from the index:"; \
		echo "$(UV_INSTALL)"; $(UV_INSTALL); }
endif
	touch $@

setup: $(VENV)/.installed ## create .venv, install the project, fetch Delta Lake's jars, make the JVM's class archive (once)
	@$(PYTHON) -m stpipe.jars --config $(CONFIG)
	@$(PYTHON) -m stpipe.jvm_archive --config $(CONFIG)

run: setup ## run the whole pipeline on the embedded default (SOURCE=olist INPUT=... for real data)
	$(PYTHON) -m jobs.nightly $(JOB_ARGS) $(INGEST_ARGS)

nightly: setup ## the nightly pipeline through spark-submit for DATE (MASTER=spark://... for a cluster)
	$(SPARK_SUBMIT) jobs/nightly.py $(JOB_ARGS) $(INGEST_ARGS)

finetune: setup ## the finetune stage through spark-submit for DATE (MASTER=spark://... for a cluster; SET="key=value ...")
	$(SPARK_SUBMIT) jobs/finetune.py $(JOB_ARGS) $(foreach kv,$(SET),--set $(kv))

ingest: setup ## only the ingest-and-clean job
	$(PYTHON) -m jobs.ingest $(JOB_ARGS) $(INGEST_ARGS)

forget: setup ## erase a person: make forget SOURCE=online_retail ID=17850 (or IDS_FILE=ids.txt)
	@test -n "$(ID)$(IDS_FILE)" || { echo "make forget: give ID=<raw user id> or IDS_FILE=<file>" >&2; exit 2; }
	$(PYTHON) -m jobs.forget $(JOB_ARGS) --source $(SOURCE) $(if $(ID),--user '$(ID)') $(if $(IDS_FILE),--users-file $(IDS_FILE))

test: setup ## the whole test suite, as CI runs it (everything but the gpu marker; TEST_WORKERS=0: one process)
	$(PYTHON) -m pytest -m "not gpu" $(XDIST_ARGS) $(PYTEST_ARGS)

test-fast: setup ## the quick tests only (no slow, notebooks or cluster markers)
	$(PYTHON) -m pytest -m "not slow and not notebooks and not cluster and not gpu" $(XDIST_ARGS) $(PYTEST_ARGS)

lint: setup ## ruff
	$(VENV)/bin/ruff check stpipe jobs udfs tests bench

evaluate: setup ## offline evaluation vs baselines at CUTOFF (default: Online Retail; CUTOFFS=D1,D2,... for several); report in reports/
	$(PYTHON) -m jobs.evaluate $(JOB_ARGS) --source $(EVAL_SOURCE) --input $(EVAL_INPUT) $(if $(CUTOFFS),--cutoffs $(CUTOFFS),--cutoff $(EVAL_CUTOFF)) --horizon-days $(HORIZON) --k $(K) --json

notebooks: setup ## execute the notebooks on ./warehouse (runs the pipeline first if needed) into reports/notebooks
	@test -d $(WAREHOUSE)/recommendations || $(MAKE) run
	$(PYTHON) -m stpipe.notebooks --warehouse $(WAREHOUSE) --date $(DATE) --out reports/notebooks --images docs/img
	@echo "Open them interactively: $(VENV)/bin/pip install jupyterlab && $(VENV)/bin/jupyter lab notebooks/"

gpu-bench: setup ## the embedding core alone at several batch sizes (on a GPU machine; CPU otherwise)
	$(PYTHON) scripts/gpu_bench.py

bench: setup ## benchmarks (BENCH="floor granger embed scaling incremental" to choose; BENCH_ROWS=200000 for incremental)
	$(PYTHON) -m bench $(BENCH) $(if $(BENCH_ROWS),--rows $(BENCH_ROWS))

clean: ## remove the warehouse, reports and caches (keeps .venv and .jars)
	rm -rf warehouse reports bench/results .pytest_cache spark-warehouse

# ---- A Spark standalone cluster on 127.0.0.1, and what spark-submit ships to it ----------
CLUSTER_PORT       ?= 7077
CLUSTER_WEBUI_PORT ?= 8080
CLUSTER_DIR        ?= .cache/cluster
PACKAGE_ARGS       ?=
# How executors get the code and Python (both ship the project wheel with --py-files):
#   DEPLOY=venv    executors run this checkout's .venv python (one machine or a shared disk)
#   DEPLOY=packed  executors unpack dist/env.tar.gz (make package) as ./environment
# e.g. make cluster-up && make package && make nightly MASTER=spark://127.0.0.1:7077 DEPLOY=packed
DEPLOY             ?=
WHEEL = $(or $(firstword $(wildcard dist/stpipe-*.whl)),$(error no dist/stpipe-*.whl: run make package first))
ifneq ($(DEPLOY),)
# With --py-files the driver imports stpipe from the wheel, so .jars is not next to it.
JOB_ARGS += --set spark.jars_dir=$(abspath .jars)
endif
ifeq ($(DEPLOY),venv)
SPARK_SUBMIT_FLAGS += --py-files $(WHEEL) --conf spark.pyspark.python=$(abspath $(PYTHON))
endif
ifeq ($(DEPLOY),packed)
SPARK_SUBMIT_FLAGS += --py-files $(WHEEL) --archives dist/env.tar.gz\#environment \
	--conf spark.pyspark.driver.python=$(abspath $(PYTHON)) \
	--conf spark.pyspark.python=./environment/bin/python
endif

.PHONY: cluster-up cluster-down

cluster-up: ## start a Spark standalone master and worker on 127.0.0.1 (CLUSTER_PORT=7077)
	scripts/cluster.sh up --port $(CLUSTER_PORT) --webui-port $(CLUSTER_WEBUI_PORT) --dir $(CLUSTER_DIR)

cluster-down: ## stop the standalone master and worker
	scripts/cluster.sh down --dir $(CLUSTER_DIR)

package: setup ## dist/: the project wheel and the packed .venv (PACKAGE_ARGS=--wheel-only)
	$(PYTHON) scripts/package.py $(PACKAGE_ARGS)
