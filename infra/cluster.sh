#!/usr/bin/env bash
# A Spark standalone cluster on 127.0.0.1 from the pip-installed pyspark: one master, N workers.
#
#   infra/cluster.sh start [N]     start a master and N workers (default 2); prints the master URL
#   infra/cluster.sh add-worker I  start worker I again (after it was stopped or killed)
#   infra/cluster.sh status        which processes of the cluster are alive
#   infra/cluster.sh stop          stop every process of the cluster by its process id
#
# The pip package has no sbin/start-master.sh, so each daemon is started with bin/spark-class; each runs in its
# own session (setsid), so its process group holds it, its executors and their Python workers: stopping a
# worker stops all of them. Settings (environment): CLUSTER_DIR (pids, logs, work folders; default
# .spark-cluster in the repository), MASTER_PORT (7077), MASTER_UI_PORT (8090), WORKER_CORES (1),
# WORKER_MEMORY (2g), PYTHON (.venv/bin/python). SPARK_CONF_DIR defaults to this folder (spark-defaults.conf).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$REPO/.spark-cluster}
MASTER_PORT=${MASTER_PORT:-7077}
MASTER_UI_PORT=${MASTER_UI_PORT:-8090}
WORKER_CORES=${WORKER_CORES:-1}
WORKER_MEMORY=${WORKER_MEMORY:-2g}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
export SPARK_HOME=${SPARK_HOME:-$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
export SPARK_CONF_DIR=${SPARK_CONF_DIR:-$REPO/infra}
export SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PYTHON} TZ=UTC
MASTER_URL=spark://127.0.0.1:$MASTER_PORT

wait_for() {  # wait_for LOG PATTERN WHAT: until LOG has PATTERN (60 s at most)
  for _ in $(seq 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cluster: $3 did not start within 60 s; see $1" >&2
  tail -n 20 "$1" >&2
  return 1
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_master() {
  mkdir -p "$CLUSTER_DIR"
  if alive "$CLUSTER_DIR/master.pid"; then echo "cluster: a master is already running ($CLUSTER_DIR)" >&2; exit 1; fi
  setsid "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_UI_PORT" >"$CLUSTER_DIR/master.log" 2>&1 &
  echo $! >"$CLUSTER_DIR/master.pid"  # spark-class execs java: this is the JVM's pid
  wait_for "$CLUSTER_DIR/master.log" "I have been elected leader" "the master"
  echo "$MASTER_URL" >"$CLUSTER_DIR/master.url"
}

start_worker() {
  local i=$1 log=$CLUSTER_DIR/worker-$1.log
  mkdir -p "$CLUSTER_DIR/work-$i"
  if alive "$CLUSTER_DIR/worker-$i.pid"; then echo "cluster: worker $i is already running" >&2; exit 1; fi
  setsid "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
    --host 127.0.0.1 --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" --webui-port 0 \
    --work-dir "$CLUSTER_DIR/work-$i" "$MASTER_URL" >"$log" 2>&1 &
  echo $! >"$CLUSTER_DIR/worker-$i.pid"
  wait_for "$log" "Successfully registered with master" "worker $i"
}

stop_all() {
  local pids=() f
  for f in "$CLUSTER_DIR"/worker-*.pid "$CLUSTER_DIR"/master.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM -- "-$pid" 2>/dev/null || true  # the whole process group: daemon, executors, Python workers
    pids+=("$pid")
    rm -f "$f"
  done
  for _ in $(seq 100); do  # 10 s for a clean shutdown, then kill what is left
    local left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -f "$CLUSTER_DIR/master.url"
}

case "${1:-}" in
  start)
    start_master
    for i in $(seq "${2:-2}"); do start_worker "$i"; done
    echo "$MASTER_URL"
    ;;
  add-worker) start_worker "${2:?which worker}" ;;
  status)
    for f in "$CLUSTER_DIR"/master.pid "$CLUSTER_DIR"/worker-*.pid; do
      [ -f "$f" ] || continue
      if alive "$f"; then state=running; else state=dead; fi
      echo "$(basename "$f" .pid) $(cat "$f") $state"
    done
    ;;
  stop) stop_all ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
