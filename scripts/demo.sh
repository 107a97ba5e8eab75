#!/usr/bin/env bash
# The end-to-end demo (`make demo`, also run by `make test`): generated source data → batch etl →
# train → batch embeddings → worker ← produce, then a readable summary, then `replay` of the
# produced range. It checks its own result (every well-formed event written exactly once, every
# malformed one in errors/, before and after the replay rewrote the range in place) and exits
# non-zero otherwise. Needs the local stack (make demo starts it) and bin/recstream.
#
# Each run uses its own stream, lease table and output prefix, so runs never see each other's
# events. Tunables: DEMO_DATA (generated, the default, or real: the public classicmodels tables and
# the lab's ratings in testdata/classicmodels), DEMO_SCALE (generated customers), DEMO_RATE
# (events/s), DEMO_DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/recstream}
RUN=${DEMO_RUN:-$(date -u +%Y%m%d%H%M%S)-$$}
OUT=out/demo/$RUN
DATA=${DEMO_DATA:-generated}
SCALE=${DEMO_SCALE:-150}
RATE=${DEMO_RATE:-10}
DURATION=${DEMO_DURATION:-30s}
SHARDS=${DEMO_SHARDS:-2}
mkdir -p "$OUT"

export RECSTREAM_KINESIS_STREAM=recstream-demo-$RUN
export RECSTREAM_DYNAMODB_LEASE_TABLE=recstream-demo-$RUN
export RECSTREAM_S3_BUCKETS_RECOMMENDATIONS=s3://recstream-recommendations/demo-$RUN
export RECSTREAM_WORKER_FLUSH_MAX_AGE=${RECSTREAM_WORKER_FLUSH_MAX_AGE:-2s}
# DEMO_TABLE=iceberg: the worker commits to an Iceberg table (SQL catalog on the stack's
# PostgreSQL, warehouse under the demo's recommendations prefix) instead of the Hive layout.
TABLE=${DEMO_TABLE:-hive}
case $TABLE in
  hive) ;;
  iceberg)
    export RECSTREAM_WORKER_OUTPUT_TABLE=iceberg
    export RECSTREAM_WORKER_OUTPUT_ICEBERG_NAME=demo_${RUN//[^0-9a-z]/_}
    export RECSTREAM_WORKER_OUTPUT_ICEBERG_COMMIT_INTERVAL=${RECSTREAM_WORKER_OUTPUT_ICEBERG_COMMIT_INTERVAL:-1s} ;;
  *) echo "DEMO_TABLE=$TABLE: want hive or iceberg" >&2; exit 1 ;;
esac
export RECSTREAM_METRICS_LISTEN=${RECSTREAM_METRICS_LISTEN:-127.0.0.1:9108}
export RECSTREAM_LOG_FORMAT=json

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'demo: FAILED: %s\n' "$*" >&2; exit 1; }
json_num() { grep -o "\"$1\": *[0-9]*" "$2" | head -1 | grep -o '[0-9]*$'; }
json_sum() { grep -o "\"$1\": *[0-9]*" "$2" | grep -o '[0-9]*$' | awk '{s += $1} END {print s + 0}'; }

worker_pid=
cleanup() {
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then kill -KILL "$worker_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

case $DATA in
  generated)
    step "batch seed: generated classicmodels data ($SCALE customers)"
    seed_args=(--scale "$SCALE" --ratings-per-customer 20) ;;
  real)
    step "batch seed: the real classicmodels data and the lab's ratings (testdata/classicmodels)"
    seed_args=(--from testdata/classicmodels) ;;
  *) fail "DEMO_DATA=$DATA: want generated or real" ;;
esac
$BIN batch seed "${seed_args[@]}" --replace 2>"$OUT/seed.log" || { cat "$OUT/seed.log"; fail "batch seed"; }
tail -1 "$OUT/seed.log"

step "batch etl: ratings ⋈ products ⋈ customers → Snappy Parquet, partitioned by customerNumber"
$BIN batch etl 2>"$OUT/etl.log" || { cat "$OUT/etl.log"; fail "batch etl"; }
tail -1 "$OUT/etl.log"

step "train: two-tower model, evaluate against baselines, publish artifacts"
$BIN train 2>"$OUT/train.log" >"$OUT/train.txt" || { cat "$OUT/train.txt" "$OUT/train.log"; fail "train"; }
cat "$OUT/train.txt"

step "batch embeddings: load the new version into pgvector"
$BIN batch embeddings 2>"$OUT/embeddings.log" || { cat "$OUT/embeddings.log"; fail "batch embeddings"; }
tail -1 "$OUT/embeddings.log"

step "worker: start on stream $RECSTREAM_KINESIS_STREAM ($SHARDS shards)"
scripts/stack.sh stream "$RECSTREAM_KINESIS_STREAM" "$SHARDS"
$BIN worker 2>"$OUT/worker.log" &
worker_pid=$!
deadline=$((SECONDS + 60))
until curl -fsS "http://$RECSTREAM_METRICS_LISTEN/readyz" >/dev/null 2>&1; do
  kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$OUT/worker.log"; fail "worker exited during start-up"; }
  [ $SECONDS -lt $deadline ] || { tail -20 "$OUT/worker.log"; fail "worker not ready within 60 s"; }
  sleep 0.5
done
echo "worker pid $worker_pid ready: http://$RECSTREAM_METRICS_LISTEN/metrics"

step "produce: $RATE events/s for $DURATION (5% malformed)"
# The range the replay step reprocesses (the stream is this run's own, so it holds only these).
replay_from=$(date -u +%Y-%m-%dT%H:%M:%SZ)
$BIN produce --rate "$RATE" --duration "$DURATION" --bad-ratio 0.05 --seed 7 --json >"$OUT/produce.json" 2>"$OUT/produce.log" \
  || { cat "$OUT/produce.log"; fail "produce"; }
sent=$(json_num sent "$OUT/produce.json")
bad=0
# An event with a field outside the schema is processed (worker.unknown_fields: ignore, the
# default): the field is dropped and counted in recstream_worker_unknown_fields_total.
kinds="bad_json missing_field invalid_field"
[ "${RECSTREAM_WORKER_UNKNOWN_FIELDS:-ignore}" = reject ] && kinds="$kinds unknown_field"
for k in $kinds; do
  n=$(json_num "$k" "$OUT/produce.json" || true); bad=$((bad + ${n:-0}))
done
good=$((sent - bad))
replay_to=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "sent $sent events: $good well-formed, $bad malformed"

step "waiting for the worker to write all $good records and $bad errors"
deadline=$((SECONDS + 120))
while :; do
  $BIN inspect --json >"$OUT/inspect.json" 2>/dev/null || true
  records=$(json_num records "$OUT/inspect.json" || echo 0)
  errors=$(json_num error_records "$OUT/inspect.json" || echo 0)
  [ "${records:-0}" -ge "$good" ] && [ "${errors:-0}" -ge "$bad" ] && break
  [ $SECONDS -lt $deadline ] || fail "after 120 s: $records/$good records, $errors/$bad errors written"
  sleep 1
done

step "status"
$BIN status | tee "$OUT/status.txt"

step "stop the worker with SIGTERM"
t0=$SECONDS
kill -TERM "$worker_pid"
rc=0; wait "$worker_pid" || rc=$?
worker_pid=
echo "worker exited with code $rc after $((SECONDS - t0)) s"
[ "$rc" -eq 0 ] || { tail -20 "$OUT/worker.log"; fail "worker exit code $rc"; }

step "summary"
$BIN inspect | tee "$OUT/summary.txt"
$BIN inspect --json >"$OUT/inspect.json"
records=$(json_num records "$OUT/inspect.json"); dups=$(json_num duplicates "$OUT/inspect.json"); errors=$(json_num error_records "$OUT/inspect.json")
echo
echo "model against the baselines on held-out ratings (warm) and held-out customers (cold), RMSE in stars:"
sed -n '2,4p' "$OUT/train.txt"
echo
echo "events sent: $sent ($bad malformed); records written: $records; duplicates: $dups; rejected events in errors/: $errors"
[ "$records" -eq "$good" ] || fail "records written $records != well-formed events sent $good"
[ "$dups" -eq 0 ] || fail "$dups duplicate records"
[ "$errors" -eq "$bad" ] || fail "errors/ holds $errors objects, $bad malformed events were sent"
grep -q "recommended:" "$OUT/summary.txt" || fail "no sample recommendations in the summary"

if [ "$TABLE" = iceberg ]; then
  # Compact now (--closed-after=-1h treats the current hour as closed) and check that the
  # table still holds every record once, in one file per hour.
  step "compact: bin-pack the table's hours, expire old snapshots"
  $BIN compact --closed-after=-1h --expire-after=1s --orphan-grace=10m --json >"$OUT/compact.json" 2>"$OUT/compact.log" \
    || { tail -20 "$OUT/compact.log"; fail "compact"; }
  cat "$OUT/compact.json"
  $BIN inspect --json >"$OUT/inspect-after-compact.json"
  records=$(json_num records "$OUT/inspect-after-compact.json"); dups=$(json_num duplicates "$OUT/inspect-after-compact.json")
  files=$(grep -c '\.parquet"' "$OUT/inspect-after-compact.json" || true)
  echo "after compaction: records $records, duplicates $dups, data files $files"
  [ "$records" -eq "$good" ] || fail "after compaction: records $records != well-formed events sent $good"
  [ "$dups" -eq 0 ] || fail "after compaction: $dups duplicate records"
  [ "$files" -le 2 ] || fail "after compaction: $files data files, want one per hour"
  # The replay replaces the whole range in one commit, rewriting the compacted file(s).
  step "replay into the table: $replay_from .. $replay_to"
  $BIN replay --from "$replay_from" --to "$replay_to" --json >"$OUT/replay.json" 2>"$OUT/replay.log" \
    || { tail -20 "$OUT/replay.log"; fail "replay"; }
  replayed=$(json_sum records "$OUT/replay.json"); removed=$(json_num records_removed "$OUT/replay.json")
  added=$(json_num files_added "$OUT/replay.json")
  $BIN inspect --json >"$OUT/inspect-after-replay.json"
  records=$(json_num records "$OUT/inspect-after-replay.json"); dups=$(json_num duplicates "$OUT/inspect-after-replay.json")
  errors=$(json_num error_records "$OUT/inspect-after-replay.json")
  echo "replayed $replayed records: $removed replaced in one commit by $added files; afterwards: records $records, duplicates $dups, rejected $errors"
  [ "$replayed" -eq "$sent" ] || fail "replay read $replayed records, $sent were sent"
  [ "$removed" -eq "$good" ] || fail "replay replaced $removed records, want every well-formed one ($good)"
  [ "$records" -eq "$good" ] || fail "after the replay: records $records != well-formed events sent $good"
  [ "$dups" -eq 0 ] || fail "after the replay: $dups duplicate records"
  [ "$errors" -eq "$bad" ] || fail "after the replay: errors/ holds $errors, $bad malformed events were sent"
  echo "demo: OK, Iceberg table (logs and reports in $OUT)"
  exit 0
fi

# The worker has stopped and checkpointed everything, so the fence (each shard's live checkpoint)
# is the end of the stream: the replay rewrites every object in place, with the same model.
step "replay: $replay_from .. $replay_to"
$BIN replay --from "$replay_from" --to "$replay_to" --json >"$OUT/replay.json" 2>"$OUT/replay.log" \
  || { tail -20 "$OUT/replay.log"; fail "replay"; }
replayed=$(json_sum records "$OUT/replay.json"); rewritten=$(json_sum objects "$OUT/replay.json"); deleted=$(json_sum deleted "$OUT/replay.json")
$BIN inspect --json >"$OUT/inspect-after-replay.json"
records=$(json_num records "$OUT/inspect-after-replay.json"); dups=$(json_num duplicates "$OUT/inspect-after-replay.json")
errors=$(json_num error_records "$OUT/inspect-after-replay.json")
echo "replayed $replayed records into $rewritten objects ($deleted stale deleted); afterwards: records $records, duplicates $dups, rejected $errors"
[ "$replayed" -eq "$sent" ] || fail "replay read $replayed records, $sent were sent"
[ "$rewritten" -gt 0 ] || fail "replay rewrote no object"
[ "$deleted" -eq 0 ] || fail "replay deleted $deleted objects with the same model (nothing is stale)"
[ "$records" -eq "$good" ] || fail "after the replay: records $records != well-formed events sent $good"
[ "$dups" -eq 0 ] || fail "after the replay: $dups duplicate records"
[ "$errors" -eq "$bad" ] || fail "after the replay: errors/ holds $errors, $bad malformed events were sent"
echo "demo: OK (logs and reports in $OUT)"
