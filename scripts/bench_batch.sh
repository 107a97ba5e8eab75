#!/usr/bin/env bash
# The nightly batch path at shop sizes: for each scale, `batch seed --scale N --replace` (N
# customers × 100 ratings), `batch etl` to a file:// datalake, `train --publish=false` (the
# issue's run), then `train` publishing to a file:// artifacts location and `batch embeddings`
# of that version. Prints the wall time and peak RSS (GNU time's maximum resident set size) of
# each, and the progress lines in train's log. Logs and data go to out/bench-batch/.
#
# It uses its own MySQL database and PostgreSQL schema, so it leaves the local stack's
# classicmodels data and live embeddings alone.
#   BENCH_BATCH_SCALES  customers per run, default "1000 10000" (100 k and 1 M ratings);
#                       100000 is 10 M ratings (long)
#   BENCH_BATCH_EMBEDDINGS=0 skips the publishing train run and batch embeddings
#   BENCH_BATCH_EMBEDDINGS_ITEMS=N (default 0: none) then loads N generated items and
#                       BENCH_BATCH_EMBEDDINGS_USERS (default N/10) generated users of 32
#                       dimensions (clustered unit vectors, scripts/gen_embeddings.awk) with
#                       `batch embeddings --from … --without-model`: the catalogue size the
#                       scales above never reach (they make N/10 products). BENCH_BATCH_SCALES=""
#                       runs only this step.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALES=${BENCH_BATCH_SCALES-1000 10000}
EMBEDDINGS=${BENCH_BATCH_EMBEDDINGS:-1}
EMB_ITEMS=${BENCH_BATCH_EMBEDDINGS_ITEMS:-0}
EMB_USERS=${BENCH_BATCH_EMBEDDINGS_USERS:-$((EMB_ITEMS / 10))}
TIME=/usr/bin/time
[[ -x $TIME ]] || { echo "bench-batch: needs GNU time at $TIME (apt-get install time)" >&2; exit 1; }
make --no-print-directory build >/dev/null
OUT=out/bench-batch
rm -rf "$OUT" && mkdir -p "$OUT"
export RECSTREAM_MYSQL_DSN="recstream@tcp(127.0.0.1:3306)/recstream_bench_batch"
export RECSTREAM_POSTGRES_SCHEMA=bench_batch
export RECSTREAM_LOG_FORMAT=json

results=()
# step NAME ROWS LOG -- command...: runs the command under GNU time, records its figures.
step() {
  local name=$1 rows=$2 log=$3
  shift 4
  if ! "$TIME" -v -o "$log.time" "$@" >"$log.out" 2>"$log"; then
    echo "bench-batch: $name at $rows rows failed; see $log" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2, a, ":"); s=0; for (i=1; i<=n; i++) s=s*60+a[i]; printf "%.1f", s}' "$log.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log.time")
  local extra=""
  if [[ $name == train* ]]; then
    extra="progress lines: $(grep -cE '"msg":"(reading dataset|stage started|stage done|training progress)"' "$log")"
  fi
  if [[ $name == "batch embeddings"* ]]; then
    extra="progress lines: $(grep -cE '"msg":"embeddings (progress|copy started|copied|index build started|index built)"' "$log")"
  fi
  results+=("$(printf '%-22s %9s %10s s %8s MB  %s' "$name" "$rows" "$wall" "$rss" "$extra")")
  echo "${results[-1]}"
}

echo "step                        rows       wall    peak RSS"
for scale in $SCALES; do
  dir=$OUT/$scale
  mkdir -p "$dir/lake" "$dir/artifacts"
  step "batch seed" "$((scale * 100))" "$dir/seed.log" -- bin/recstream batch seed --scale "$scale" --replace
  step "batch etl" "$((scale * 100))" "$dir/etl.log" -- bin/recstream batch etl --location "file://$PWD/$dir/lake"
  step "train --publish=false" "$((scale * 100))" "$dir/train.log" -- bin/recstream train --from "file://$PWD/$dir/lake" --publish=false
  grep -E '^ +(warm|cold) ' "$dir/train.log.out" | sed 's/^/    /'
  if [[ $EMBEDDINGS == 1 ]]; then
    step "train (publish)" "$((scale * 100))" "$dir/train-publish.log" -- bin/recstream train --from "file://$PWD/$dir/lake" --to "file://$PWD/$dir/artifacts"
    step "batch embeddings" "$((scale * 100))" "$dir/embeddings.log" -- \
      env RECSTREAM_S3_BUCKETS_ARTIFACTS="file://$PWD/$dir/artifacts" bin/recstream batch embeddings --force
  fi
done
if ((EMB_ITEMS > 0)); then
  dir=$OUT/embeddings-$EMB_ITEMS
  mkdir -p "$dir/src/embeddings"
  gen() { awk -v seed="$1" -v clusters=2000 -v d=32 -v noise=0.35 -v n="$2" -v kind="$3" -f scripts/gen_embeddings.awk; }
  gen 2026 "$EMB_ITEMS" items >"$dir/src/embeddings/item_embeddings.csv"
  gen 2027 "$EMB_USERS" users >"$dir/src/embeddings/user_embeddings.csv"
  step "batch embeddings" "$EMB_ITEMS+$EMB_USERS" "$dir/embeddings.log" -- \
    bin/recstream batch embeddings --from "file://$PWD/$dir/src" --without-model --force
  grep -E '"msg":"embeddings (copied|index built)"' "$dir/embeddings.log" \
    | sed -E 's/.*"(building|file)":"([^"]*\/)?([^"]*)".*"table":"([^"]*)".*"duration":"([^"]*)".*/    \3 (\4): \5/;s/.*"file":"([^"]*\/)?([^"]*)".*"duration":"([^"]*)".*/    copy \2: \3/'
fi
echo
echo "summary ($(date -u +%Y-%m-%d), $(nproc) cores):"
printf '%s\n' "${results[@]}"
