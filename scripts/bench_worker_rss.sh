#!/usr/bin/env bash
# Benchmark (d) with the real model: the `recstream worker` binary (trained model, embeddings in
# PostgreSQL + pgvector, output to the S3 gateway) drains 8 pre-loaded Kinesis shards of 12,000
# producer events each (more than a 10,000-record buffer per shard, the default flush limit).
# Prints the records written, the drain time from process start, and the process's VmHWM (peak
# resident set) read from /proc before SIGTERM. Needs the local stack (scripts/stack.sh up), the
# seeded classicmodels source (for `recstream produce`), the aws CLI and psql. Everything it
# creates has a unique name and is removed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DATA=${RECSTREAM_DATA:-$ROOT/testdata/classicmodels}
SHARDS=${SHARDS:-8}
N=$((SHARDS * 12000))
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-recstream} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-recstream-local-secret}
export AWS_REGION=${AWS_REGION:-us-east-1} AWS_DEFAULT_REGION=${AWS_REGION:-us-east-1}
export RECSTREAM_MYSQL_PASSWORD=${RECSTREAM_MYSQL_PASSWORD:-recstream} RECSTREAM_POSTGRES_PASSWORD=${RECSTREAM_POSTGRES_PASSWORD:-recstream}
export PGPASSWORD=$RECSTREAM_POSTGRES_PASSWORD

WORK=$(mktemp -d)
BIN=$WORK/recstream
go build -o "$BIN" ./cmd/recstream
TS=$(date +%s)
STREAM=rs-bench-rss-$TS
SCHEMA=rs_bench_rss_$TS
OUT=s3://recstream-recommendations/$STREAM
export RECSTREAM_POSTGRES_SCHEMA=$SCHEMA RECSTREAM_KINESIS_STREAM=$STREAM RECSTREAM_DYNAMODB_LEASE_TABLE=$STREAM
export RECSTREAM_S3_BUCKETS_ARTIFACTS=file://$WORK/artifacts RECSTREAM_S3_BUCKETS_RECOMMENDATIONS=$OUT
export RECSTREAM_METRICS_LISTEN=127.0.0.1:19108 RECSTREAM_WORKER_SHARD_SYNC_INTERVAL=1s RECSTREAM_WORKER_STATUS_INTERVAL=0s
KIN=(--endpoint-url http://127.0.0.1:4567)
PID=
cleanup() {
  [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  aws kinesis delete-stream --stream-name "$STREAM" "${KIN[@]}" >/dev/null 2>&1 || true
  aws dynamodb delete-table --table-name "$STREAM" --endpoint-url http://127.0.0.1:4568 >/dev/null 2>&1 || true
  aws s3 rm --recursive "$OUT" --endpoint-url http://127.0.0.1:7070 >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U recstream recstream -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" train --csv "$ROOT/testdata/lab/ratings_ml_training_dataset.csv" --epochs 3 >/dev/null 2>&1
"$BIN" batch embeddings >/dev/null 2>&1
aws kinesis create-stream --stream-name "$STREAM" --shard-count "$SHARDS" "${KIN[@]}"
for _ in $(seq 60); do
  st=$(aws kinesis describe-stream-summary --stream-name "$STREAM" "${KIN[@]}" --query StreamDescriptionSummary.StreamStatus --output text)
  [[ $st == ACTIVE ]] && break
  sleep 1
done
"$BIN" produce --stream "$STREAM" --rate 20000 --count "$N" --unseen-ratio 0.1 2>/dev/null

"$BIN" worker >"$WORK/worker.log" 2>&1 &
PID=$!
T0=$(date +%s.%N)
out=0
for _ in $(seq 600); do
  sleep 1
  out=$(curl -s 127.0.0.1:19108/metrics | awk '/^recstream_worker_records_out_total/ {s+=$2} END {printf "%d", s}')
  [[ $out -ge $N ]] && break
done
T1=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
kill -TERM "$PID"
wait "$PID" || { echo "worker exited with $?" >&2; exit 1; }
PID=
[[ $out -ge $N ]] || { echo "worker wrote $out of $N records" >&2; exit 1; }
echo "shards=$SHARDS records_out=$out drain_seconds=$(echo "$T1 - $T0" | bc) peak_rss_mb=$((hwm / 1024))"
