#!/usr/bin/env bash
# Start or stop a Spark standalone cluster (one master, one worker) on 127.0.0.1,
# from the pyspark package of the project's .venv (pip's pyspark has no start-master.sh,
# but it ships sbin/spark-daemon.sh, which is what start-master.sh calls).
#
#   scripts/cluster.sh up   [--port 7077] [--webui-port 8080] [--worker-webui-port 8081]
#                           [--cores 2] [--memory 3g] [--dir .cache/cluster]
#   scripts/cluster.sh down [--dir .cache/cluster]
#   scripts/cluster.sh status [--dir .cache/cluster]
#
# `up` waits until the worker has registered with the master and prints the master URL.
# Logs and pid files live in --dir (one folder per cluster: two clusters never share it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
action="${1:-}"; shift || true
port=7077; webui=8080; worker_webui=8081; cores=2; memory=3g; dir="$ROOT/.cache/cluster"
timeout_s="${CLUSTER_TIMEOUT:-180}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --webui-port) webui="$2"; shift 2 ;;
    --worker-webui-port) worker_webui="$2"; shift 2 ;;
    --cores) cores="$2"; shift 2 ;;
    --memory) memory="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

SPARK_HOME="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME
unset SPARK_NO_DAEMONIZE                 # spark-daemon.sh must fork into the background
export SPARK_LOCAL_IP=127.0.0.1
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
export SPARK_LOG_DIR="$dir/logs" SPARK_PID_DIR="$dir/pids" SPARK_WORKER_DIR="$dir/work"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}"
export SPARK_IDENT_STRING="${USER:-$(id -un)}"
daemon="$SPARK_HOME/sbin/spark-daemon.sh"
MASTER=org.apache.spark.deploy.master.Master
WORKER=org.apache.spark.deploy.worker.Worker

wait_for() {  # wait_for FILE-GLOB PATTERN WHAT
  local waited=0
  until grep -qs "$2" $1; do
    if (( waited >= timeout_s )); then
      echo "cluster.sh: $3 not up after ${timeout_s}s; logs in $SPARK_LOG_DIR" >&2
      tail -n 20 $1 >&2 || true
      return 1
    fi
    sleep 1; waited=$((waited + 1))
  done
}

case "$action" in
  up)
    if [[ -s "$SPARK_PID_DIR/spark-$SPARK_IDENT_STRING-$MASTER-1.pid" ]] && kill -0 "$(cat "$SPARK_PID_DIR/spark-$SPARK_IDENT_STRING-$MASTER-1.pid")" 2>/dev/null; then
      echo "cluster.sh: a master from $dir is already running (cluster.sh down --dir $dir)" >&2; exit 1
    fi
    rm -rf "$SPARK_LOG_DIR"; mkdir -p "$SPARK_LOG_DIR" "$SPARK_PID_DIR" "$SPARK_WORKER_DIR"
    "$daemon" start "$MASTER" 1 --host 127.0.0.1 --port "$port" --webui-port "$webui"
    wait_for "$SPARK_LOG_DIR/*Master*.out" "Starting Spark master at\|I have been elected leader" master
    "$daemon" start "$WORKER" 1 "spark://127.0.0.1:$port" --host 127.0.0.1 \
      --cores "$cores" --memory "$memory" --webui-port "$worker_webui" --work-dir "$SPARK_WORKER_DIR"
    if ! wait_for "$SPARK_LOG_DIR/*Worker*.out" "Successfully registered with master" worker; then
      "$0" down --dir "$dir"; exit 1
    fi
    echo "spark://127.0.0.1:$port"
    ;;
  down)
    "$daemon" stop "$WORKER" 1 || true
    "$daemon" stop "$MASTER" 1 || true
    ;;
  status)
    "$daemon" status "$MASTER" 1 || true
    "$daemon" status "$WORKER" 1 || true
    ;;
  *)
    echo "usage: cluster.sh up|down|status [options]  (see the top of this file)" >&2; exit 2 ;;
esac
