#!/usr/bin/env bash
# Runs the benchmarks whose figures docs/benchmarks.md quotes. Some take long (the 1,000,000-item
# HNSW build takes minutes to tens of minutes on 2 cores); pick with BENCH=etl,embeddings,... .
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=true
BENCH=${BENCH:-model,queries,worker,etl}
has() { [[ ",$BENCH," == *",$1,"* ]]; }
if has model; then
  go test -run '^$' -bench 'UserTower|TrainRealData' -benchtime 3s ./inference ./inference/train
fi
if has queries; then
  go test -run '^$' -bench 'ItemsFromUsers500' ./inference
fi
if has worker; then
  go test -run '^$' -bench 'BenchmarkProcessingPath' -benchtime 100x ./worker
  RECSTREAM_WORKER_BENCH=1 go test -run '^$' -bench 'EndToEnd|Latency|PeakRSS|DrainThrottled' -benchtime 1x -timeout 30m ./worker
fi
if has etl; then
  go test -run '^$' -bench 'ETL' -benchtime 1x -timeout 60m ./batch/etl
fi
if has embeddings; then
  RECSTREAM_BENCH_1M=1 go test -run TestBench1M -v -timeout 90m ./inference
fi
