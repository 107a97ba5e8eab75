package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/worker"
)

func runReplay(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "replay")
	from := fs.String("from", "", "start of the range (RFC 3339); the replay starts at the flush window containing it")
	to := fs.String("to", "", "end of the range (RFC 3339); default: up to each shard's live checkpoint")
	shards := fs.String("shards", "", "comma-separated shard ids (default: every shard)")
	asJSON := fs.Bool("json", false, "print the per-shard report as JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	req := worker.ReplayRequest{}
	var err error
	if req.From, err = time.Parse(time.RFC3339Nano, *from); err != nil {
		return usageError{fmt.Sprintf("--from: want an RFC 3339 time like 2026-11-29T14:00:00Z, got %q", *from)}
	}
	if *to != "" {
		if req.To, err = time.Parse(time.RFC3339Nano, *to); err != nil {
			return usageError{fmt.Sprintf("--to: want an RFC 3339 time, got %q", *to)}
		}
		if req.To.Before(req.From) {
			return usageError{"--to is before --from"}
		}
	}
	if *shards != "" {
		req.Shards = strings.Split(*shards, ",")
	}
	if req.From.After(time.Now()) {
		return usageError{"--from is in the future"}
	}
	cfg := app.Config
	worker.RouteLogrus(app.Log)
	sc, err := newStreamClients(ctx, app)
	if err != nil {
		return err
	}
	out, artifacts, kc, db := sc.out, sc.artifacts, sc.kinesis, sc.dynamo
	store, err := checkpoint.New(checkpoint.Config{Table: cfg.DynamoDB.LeaseTable, WorkerID: "recstream-replay", FailoverTime: cfg.Worker.FailoverTime, Logger: app.Log}, db)
	if err != nil {
		return usageError{err.Error()}
	}
	svc, closeModel, err := serveModel(ctx, app, artifacts, nil, nil)
	if err != nil {
		return err
	}
	defer closeModel()

	// The fence: the live worker's checkpoints, read when each shard's replay starts.
	fence := func(ctx context.Context, shardID string) (string, error) {
		leases, err := store.ListLeases(ctx)
		if err != nil {
			return "", err
		}
		for _, l := range leases {
			if l.ShardID == shardID {
				return l.Checkpoint, nil
			}
		}
		return "", nil
	}
	if cfg.Worker.Output.Table == "iceberg" {
		return replayTable(ctx, app, sc, svc, fence, req, *asJSON)
	}
	start := time.Now()
	res, err := worker.Replay(ctx, cfg.Worker, cfg.Kinesis.Stream, worker.Deps{Store: out, Recommender: recommender{svc: svc.Service},
		K: cfg.Inference.K, Log: app.Log}, kc, fence, req)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return exitCodeError{exitFailure, fmt.Errorf("replay interrupted; rerun it (it rewrites the same objects): %w", err)}
		}
		return exitCodeError{exitFailure, err}
	}
	var records, objects, deleted int64
	for _, r := range res {
		records += r.Records
		objects += r.Objects
		deleted += r.Deleted
	}
	app.Log.Info("replay finished", zap.Int("shards", len(res)), zap.Int64("records", records), zap.Int64("objects", objects),
		zap.Int64("deleted", deleted),
		zap.String("model_version", svc.Version()), zap.Duration("duration", time.Since(start)))
	if *asJSON {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	for _, r := range res {
		fmt.Fprintf(app.Stdout, "%s: %d records, %d objects rewritten, %d stale deleted, %d late cuts (%s .. %s), stopped at %s\n",
			r.ShardID, r.Records, r.Objects, r.Deleted, r.LateCuts, r.FirstSeq, r.LastSeq, r.Stop)
	}
	return nil
}

// replayTable is replay with worker.output.table: iceberg: the range's records are replaced in
// one commit (worker.ReplayTable); the fence is each shard's position in the table (or its
// live checkpoint, past a last flush of rejected records only).
func replayTable(ctx context.Context, app *App, sc streamClients, svc servedModel, fence worker.CheckpointReader, req worker.ReplayRequest, asJSON bool) error {
	cfg := app.Config
	ic := cfg.Worker.Output.Iceberg
	cat, _, closeCat, err := openCatalog(ctx, app, sc.s3)
	if err != nil {
		return err
	}
	defer closeCat()
	// The replay's id (its files' names) is the table's snapshot and the request: a rerun
	// after a crash rewrites the same names when no commit came in between.
	tag := fmt.Sprintf("%s|%s|%s|%s", cfg.Kinesis.Stream, req.From.UTC().Format(time.RFC3339Nano), req.To.UTC().Format(time.RFC3339Nano), strings.Join(req.Shards, ","))
	rep, err := icetable.OpenReplace(ctx, cat, ic.Ident(), tag, app.Log)
	if err != nil {
		return fmt.Errorf("replay: open %s.%s: %w", ic.Namespace, ic.Name, err)
	}
	start := time.Now()
	res, err := worker.ReplayTable(ctx, cfg.Worker, cfg.Kinesis.Stream, worker.Deps{Store: sc.out, Recommender: recommender{svc: svc.Service},
		K: cfg.Inference.K, Log: app.Log}, sc.kinesis, rep, fence, req, worker.TableReplayOptions{})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return exitCodeError{exitFailure, fmt.Errorf("replay interrupted before its commit landed (the table is unchanged unless the log says committed); rerun it: %w", err)}
		}
		return exitCodeError{exitFailure, err}
	}
	var records int64
	for _, r := range res.Shards {
		records += r.Records
	}
	c := res.Commit
	app.Log.Info("replay finished", zap.String("replay_id", c.ReplayID), zap.Int("shards", len(res.Shards)), zap.Int64("records", records),
		zap.Int("files_removed", c.FilesRemoved), zap.Int("files_rewritten", c.FilesKept), zap.Int("files_added", c.FilesAdded),
		zap.Int64("records_removed", c.RecordsRemoved), zap.Int64("records_kept", c.RecordsKept), zap.Int64("errors_deleted", res.ErrorsDeleted),
		zap.String("model_version", svc.Version()), zap.Duration("duration", time.Since(start)))
	if asJSON {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	for _, r := range res.Shards {
		fmt.Fprintf(app.Stdout, "%s: %d records (%s .. %s), stopped at %s\n", r.ShardID, r.Records, r.FirstSeq, r.LastSeq, r.Stop)
	}
	fmt.Fprintf(app.Stdout, "table commit %s: %d files removed (%d rewritten keeping %d other records), %d files added, %d records replaced; errors/: %d written, %d stale deleted\n",
		c.ReplayID, c.FilesRemoved, c.FilesKept, c.RecordsKept, c.FilesAdded, c.RecordsRemoved, res.ErrorObjects, res.ErrorsDeleted)
	return nil
}
