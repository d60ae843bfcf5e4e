#!/bin/bash
# Entry point of the anomalake image (infra/docker/Dockerfile).
#
# Spark on Kubernetes starts its pods with the argument `driver ...` (cluster mode: spark-submit runs the
# application in client mode inside the driver pod) or `executor` (the executor backend, configured by the
# SPARK_* variables Spark puts in the pod). The pip pyspark in this image has no entry point for those, so this
# is a small one after Spark's kubernetes/dockerfiles/spark/entrypoint.sh. Any other command (Airflow's, or
# `anomalake ...`) runs as given. tini reaps the Python workers Spark forks.
set -euo pipefail

case "${1:-}" in
  driver)
    shift
    exec /usr/bin/tini -s -- "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    # Spark passes the executor's JVM options as SPARK_JAVA_OPT_0, _1, ... (in that order).
    mapfile -t java_opts < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//' || true)
    exec /usr/bin/tini -s -- "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec /usr/bin/tini -s -- "$@"
    ;;
esac
