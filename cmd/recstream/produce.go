package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/produce"
)

func runProduce(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "produce")
	rate := fs.Float64("rate", 0.1, "events per second (the lab sent one every 10 s)")
	count := fs.Int("count", 0, "stop after this many events (0: no limit)")
	duration := fs.Duration("duration", 0, "stop after this long (0: no limit)")
	badRatio := fs.Float64("bad-ratio", 0, "share of malformed events, 0..1")
	unseenRatio := fs.Float64("unseen-ratio", 0.1, "share of events from customers and cities the model has never seen")
	seed := fs.Uint64("seed", 1, "generator seed: same seed, same events")
	stream := fs.String("stream", app.Config.Kinesis.Stream, "stream name")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg := produce.Config{Stream: *stream, Rate: *rate, Count: *count, Duration: *duration}
	if err := cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	gcfg := produce.GenConfig{Seed: *seed, BadRatio: *badRatio, UnseenRatio: *unseenRatio}
	if err := gcfg.Validate(); err != nil {
		return usageError{err.Error()}
	}

	db, err := mysqldb.Open(app.Config.MySQL)
	if err != nil {
		return err
	}
	defer db.Close()
	lctx, cancel := context.WithTimeout(ctx, awsenv.DefaultTimeout)
	cat, err := produce.LoadCatalog(lctx, db)
	cancel()
	if err != nil {
		return fmt.Errorf("produce: %w (seed the source first: recstream batch seed)", err)
	}
	gen, err := produce.NewGenerator(gcfg, cat)
	if err != nil {
		return err
	}
	client, err := awsenv.Kinesis(ctx, app.Config.Kinesis)
	if err != nil {
		return err
	}
	log := app.Log.With(zap.String("component", "produce"), zap.String("stream", cfg.Stream))
	p, err := produce.New(cfg, gen, client, log)
	if err != nil {
		return err
	}
	log.Info("producing", zap.Float64("rate", cfg.Rate), zap.Int("count", cfg.Count), zap.Duration("duration", cfg.Duration),
		zap.Float64("bad_ratio", gcfg.BadRatio), zap.Int("customers", len(cat.Customers)), zap.Int("products", len(cat.Products)))
	st, err := p.Run(ctx)
	bad := 0
	for _, n := range st.Bad {
		bad += n
	}
	log.Info("produced", zap.Int("records", st.Sent), zap.Int("bad", bad), zap.Int("throttled", st.Throttled),
		zap.Duration("duration", st.Elapsed), zap.Any("per_shard", st.PerShard))
	if *jsonOut {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		fmt.Fprintf(app.Stdout, "sent %d events (%d malformed) in %s to %s\n", st.Sent, bad, st.Elapsed.Round(time.Millisecond), cfg.Stream)
	}
	return err
}
