# recstream — see README.md. `make demo` and `make test` set up the local stack themselves.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

# Local-stack credentials (scripts/stack.sh creates them). Production takes credentials from the
# AWS credential chain and RECSTREAM_*_PASSWORD set by the deployment, never from here.
export AWS_ACCESS_KEY_ID ?= recstream
export AWS_SECRET_ACCESS_KEY ?= recstream-local-secret
export AWS_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED ?= true
export RECSTREAM_MYSQL_PASSWORD ?= recstream
export RECSTREAM_POSTGRES_PASSWORD ?= recstream

TEST_TIMEOUT ?= 45m

.PHONY: all build stack stack-down stack-status test unit vet demo bench bench-leases bench-lab-rate bench-ice-rate bench-batch fuzz soak soak-recovery clean

all: build

build:
	$(GO) build -trimpath -o bin/recstream ./cmd/recstream

stack:
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

stack-status:
	scripts/stack.sh status

vet:
	$(GO) vet ./...
	$(GO) vet -tags soak ./cmd/recstream/
	$(GO) vet -tags leasesim ./worker/

## test: set up the local stack, vet, run every test under the race detector (unit + integration
## over the wire; the heavy training tests in a second pass without it), a 2-minute seeded soak
## (three workers under injected faults and SIGKILLs, see soak), then the
## demo (the whole system, self-checking) with AWS API recording, the demo again with the Iceberg
## output (worker commits, compact, inspect through the spec reader), and check the IAM policies
## against the operations the demo's subcommands really called.
# Training tests are pure arithmetic on one goroutine per gradient shard and run ten times slower
# under the race detector; TestSameSeedSameArtifacts still drives the parallel trainer under
# -race, the heavy ones run in a second pass without it.
RACE_SKIP := ^(TestSeedSpread|TestSeedSpreadGenerated|TestTrainOnRealDataMeetsTargets|TestTrainFromETLDatasetEqualsLabCSV)$$

test: stack vet
	CI=$${CI:-true} $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -skip '$(RACE_SKIP)' ./...
	CI=$${CI:-true} $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '$(RACE_SKIP)' ./inference/train/ ./cmd/recstream/
	$(MAKE) --no-print-directory soak SOAK_DURATION=$${TEST_SOAK_DURATION:-2m} SOAK_SEED=$${TEST_SOAK_SEED:-1}
	$(MAKE) --no-print-directory build
	rm -f out/aws-ops.log && mkdir -p out
	RECSTREAM_AWS_OPLOG=$(CURDIR)/out/aws-ops.log DEMO_DURATION=$${DEMO_DURATION:-20s} scripts/demo.sh
	RECSTREAM_AWS_OPLOG=$(CURDIR)/out/aws-ops.log DEMO_TABLE=iceberg DEMO_DURATION=$${DEMO_DURATION:-20s} scripts/demo.sh
	CI=$${CI:-true} RECSTREAM_IAM_OPLOG=$(CURDIR)/out/aws-ops.log $(GO) test -count=1 -run 'TestPoliciesMatchRecordedOperations' -v ./deploy/

## unit: the quick run (-short, CI unset): long scenario tests are skipped, and integration tests
## skip instead of failing when the stack is not up.
unit:
	CI= $(GO) test -count=1 -short ./...

## demo: set up the stack and run the whole system end to end (see scripts/demo.sh).
demo: stack build
	scripts/demo.sh

## bench: the benchmarks whose figures docs/ quotes (long; see docs/benchmarks.md).
bench: stack build
	scripts/bench.sh

## bench-leases: the lease simulation (no stack needed): real workers against an in-memory
## DynamoDB that bills capacity units and an in-memory Kinesis, in virtual time; prints the
## cost, all-leased, failover and rolling-restart table of docs/benchmarks.md.
## LEASE_SIM selects the grid ("all", or e.g. 1000x100,256x16), LEASE_SIM_ROLLING caps the
## workers restarted one by one per cell.
LEASE_SIM ?= 16x4,64x16,256x16
LEASE_SIM_ROLLING ?= 20
bench-leases:
	RECSTREAM_LEASE_SIM=$(LEASE_SIM) RECSTREAM_LEASE_SIM_ROLLING=$(LEASE_SIM_ROLLING) $(GO) test -tags leasesim -count=1 -timeout 30m -run '^TestLeaseSim$$' -v ./worker/ | grep -v '^=== RUN'

## bench-batch: wall time and peak RSS of batch seed, batch etl, train and batch embeddings at
## 100 k and 1 M ratings (BENCH_BATCH_SCALES="1000 10000 100000" adds 10 M; BENCH_BATCH_EMBEDDINGS_ITEMS=1000000
## loads 1 M generated items and 100 k users); in its own MySQL
## database and PostgreSQL schema of a running local stack (make stack). See scripts/bench_batch.sh.
bench-batch: build
	scripts/bench_batch.sh

## fuzz: a short run of every fuzz target.
fuzz:
	scripts/fuzz.sh

clean:
	rm -rf bin out

## bench-lab-rate: the shipped flush settings at the lab's rate (one event per 10 s, 4 shards) for
## LAB_RATE_DURATION (default 10m): objects per shard (<= 60 per shard-hour) and p99 put→visible.
bench-lab-rate: stack
	RECSTREAM_WORKER_BENCH=1 LAB_RATE_DURATION=$${LAB_RATE_DURATION:-10m} $(GO) test -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkLabRateDefaults$$' -benchtime 1x -v ./worker/

## bench-ice-rate: 1,000 events/s on 4 shards into the Iceberg table with the shipped settings for
## ICE_RATE_DURATION (default 3m; ICE_RATE_MAX_AGE sets the flush windows): catalog commits per
## minute and the table's objects per hour before and after compact.
bench-ice-rate: stack
	RECSTREAM_WORKER_BENCH=1 ICE_RATE_DURATION=$${ICE_RATE_DURATION:-3m} $(GO) test -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkIcebergRate$$' -benchtime 1x -v ./worker/

## soak-recovery: the recovery schedule: every fault kind alone (blackouts shorter and longer
## than the lease time), each after the fleet recovered from the previous one; fails when a
## shard takes longer than 5 s (failover_time + 5 s where a lease moved) to checkpoint again.
soak-recovery:
	$(MAKE) --no-print-directory soak SOAK_ISOLATED=1 SOAK_DURATION=$${SOAK_DURATION:-2m}

## soak: three worker processes under seeded faults (AWS error answers, resets, slow and lost
## answers, blackouts, PostgreSQL cuts, SIGKILLs) while events flow; checks exactly-once output,
## no unexplained exits, flat memory and per-fault recovery (cmd/recstream/soak_test.go).
## SOAK_DURATION (default 10m) and SOAK_SEED (default 1) choose the run; logs in out/soak/.
soak: stack
	CI=$${CI:-true} SOAK_DURATION=$${SOAK_DURATION:-10m} SOAK_SEED=$${SOAK_SEED:-1} $(GO) test -tags soak -count=1 -p 1 -timeout 60m -run '^TestSoak' -v ./cmd/recstream/
