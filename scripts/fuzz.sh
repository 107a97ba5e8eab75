#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZTIME each, default 20s). New crashers land in the
# package's testdata/fuzz/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}
targets=(
  "./worker FuzzDecode"
  "./worker FuzzDecodeEmbeds"
  "./worker FuzzErrorRecordRoundTrip"
  "./internal/csvio FuzzCSVRecord"
  "./batch/embeddings FuzzParseEmbeddingRow"
  "./inference FuzzDecodeSafetensors"
  "./inference/train FuzzReadLabCSV"
  "./deploy FuzzParseExpression"
  "./deploy FuzzParseCrontab"
  "./deploy FuzzShellWords"
)
for t in "${targets[@]}"; do
  set -- $t
  echo "== $2 ($1, $FUZZTIME)"
  CI= go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1"
done
