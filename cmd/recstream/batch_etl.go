package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/etl"
	"github.com/recstream/recstream/internal/mysqldb"
)

func runBatchETL(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "batch etl")
	dryRun := fs.Bool("dry-run", false, "print the plan (source rows, partitions, lock, published dataset) and write nothing")
	shardFlag := fs.String("shard", "0/1", "i/n: export only customers with crc32(customerNumber) % n == i; publish when all n shards of --run-id are in")
	runID := fs.String("run-id", "", "run id (required with --shard i/n, n > 1: the same for the n tasks of one run; default: generated)")
	location := fs.String("location", app.Config.S3.Buckets.Datalake, "datalake location: s3://bucket[/prefix] or file:///dir (default: config s3.buckets.datalake)")
	if err := fs.parse(args); err != nil {
		return err
	}
	// Memory is bounded by design (one partition open, row_group_rows per file); a soft limit
	// also keeps the garbage collector from letting the heap float to twice the live set.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		prev := debug.SetMemoryLimit(etlMemoryLimit)
		defer debug.SetMemoryLimit(prev) // run may be called in-process (tests)
	}
	shard, shards, err := parseShard(*shardFlag)
	if err != nil {
		return usageError{err.Error()}
	}
	if shards > 1 && *runID == "" {
		return usageError{"--shard i/n with n > 1 needs --run-id, shared by the n tasks of the run"}
	}
	store, err := openStore(ctx, app, "--location", *location)
	if err != nil {
		return err
	}
	db, err := mysqldb.Open(app.Config.MySQL)
	if err != nil {
		return err
	}
	defer db.Close()
	opts := etl.Options{RunID: *runID, Shard: shard, Shards: shards}
	job, err := etl.New(db, store, app.Config.Batch.ETLConfig(), opts, app.Log)
	if err != nil {
		return usageError{err.Error()}
	}
	if *dryRun {
		plan, err := job.Plan(ctx)
		if err != nil {
			return err
		}
		return plan.Write(app.Stdout)
	}
	if bar := progressBar(app, 0, "exporting", "rows"); bar != nil {
		if total, err := job.CountSourceRows(ctx); err == nil {
			bar.ChangeMax64(total)
		}
		job, err = etl.New(db, store, app.Config.Batch.ETLConfig(), etl.Options{RunID: job.RunID(), Shard: shard, Shards: shards, Progress: func(n int64) { _ = bar.Set64(n) }}, app.Log)
		if err != nil {
			return err
		}
		defer bar.Finish() //nolint:errcheck
	}
	res, err := job.Run(ctx)
	var locked *etl.LockedError
	if errors.As(err, &locked) {
		return exitCodeError{exitLocked, err}
	}
	if err != nil {
		return fmt.Errorf("batch etl run %s: %w", res.RunID, err)
	}
	fields := []zap.Field{
		zap.String("run_id", res.RunID), zap.String("shard", fmt.Sprintf("%d/%d", res.Shard, res.Shards)),
		zap.Int64("rows", res.Rows), zap.Int("partitions", res.Partitions), zap.Int("files", res.Files),
		zap.Int64("bytes", res.Bytes), zap.Duration("duration", res.Duration),
		zap.Int64("source_rows", res.SourceRows), zap.Any("rejected", res.Rejected),
		zap.Bool("published", res.Published), zap.Int("removed_partitions", res.Removed), zap.Int("deleted_files", res.Deleted),
	}
	if res.Published {
		fields = append(fields, zap.Int("dataset_partitions", len(res.Manifest.Partitions)), zap.Int64("dataset_rows", res.Manifest.Rows))
	}
	app.Log.Info("etl finished", fields...)
	return nil
}

// etlMemoryLimit is batch etl's soft heap limit unless GOMEMLIMIT is set (the target is a
// peak RSS under 256 MB at any dataset size).
const etlMemoryLimit = 160 << 20

// parseShard parses "i/n".
func parseShard(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || n > 4096 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("--shard %q: want i/n with 0 <= i < n <= 4096", s)
	}
	return i, n, nil
}
