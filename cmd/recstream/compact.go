package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/icetable"
)

// runCompact is `recstream compact`: the Iceberg table's maintenance job (cron or an ECS
// scheduled task, like batch etl). Safe to run while workers commit, and to rerun after a
// crash at any point.
func runCompact(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "compact")
	closedAfter := fs.Duration("closed-after", 10*time.Minute, "an hour is compacted once it ended this long ago (late records of a closed hour are merged by the next run)")
	target := fs.Int64("target-bytes", 128<<20, "size of a compacted file; a smaller hour becomes one file")
	expireAfter := fs.Duration("expire-after", 24*time.Hour, "expire snapshots older than this (0: keep all); time travel reaches back this far")
	orphanGrace := fs.Duration("orphan-grace", time.Hour, "delete unreferenced files older than this (0: none); far above worker.output.iceberg.commit_interval")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	if app.Config.Worker.Output.Table != "iceberg" {
		return usageError{"compact: worker.output.table is not iceberg (the Hive layout is not compacted: see docs)"}
	}
	if *target < 1<<20 {
		return usageError{fmt.Sprintf("compact: --target-bytes must be >= 1 MiB, got %d", *target)}
	}
	if *orphanGrace != 0 && *orphanGrace < 10*time.Minute {
		return usageError{fmt.Sprintf("compact: --orphan-grace must be 0 or >= 10m (a worker's uncommitted files must not be taken for orphans), got %s", *orphanGrace)}
	}
	ic := app.Config.Worker.Output.Iceberg
	client, err := awsenv.S3(ctx, app.Config.S3)
	if err != nil {
		return err
	}
	cat, _, closeCat, err := openCatalog(ctx, app, client)
	if err != nil {
		return err
	}
	defer closeCat()
	start := time.Now()
	rep, err := icetable.Compact(ctx, cat, ic.Ident(), icetable.CompactOptions{Now: time.Now(), ClosedAfter: *closedAfter,
		TargetBytes: *target, ExpireAfter: *expireAfter, OrphanGrace: *orphanGrace, Log: app.Log})
	if err != nil {
		return fmt.Errorf("compact %s.%s: %w", ic.Namespace, ic.Name, err)
	}
	app.Log.Info("compaction done", zap.Int("hours", rep.Hours), zap.Int("files_in", rep.FilesIn), zap.Int("files_out", rep.FilesOut),
		zap.Int64("records", rep.Records), zap.Int("snapshots_expired", rep.Expired), zap.Int("orphans_deleted", rep.OrphansFound),
		zap.Duration("duration", time.Since(start)))
	if *asJSON {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(app.Stdout, "compacted %d hours: %d files → %d (%d records); %d snapshots expired; %d orphan files deleted\n",
		rep.Hours, rep.FilesIn, rep.FilesOut, rep.Records, rep.Expired, rep.OrphansFound)
	return nil
}
