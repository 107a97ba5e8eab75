package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/checkpoint/leasestatus"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/pg"
)

// StatusReport is the whole `recstream status` answer.
type StatusReport struct {
	Stream            string               `json:"stream"`
	LeaseTable        string               `json:"lease_table"`
	Workers           []leasestatus.Worker `json:"workers"` // open shards per owner, sorted by owner
	Shards            []leasestatus.Shard  `json:"shards"`
	ModelVersion      string               `json:"model_version"`      // artifacts latest pointer
	EmbeddingsVersion string               `json:"embeddings_version"` // live row of embedding_versions
	Problems          []string             `json:"problems,omitempty"` // parts that could not be read
}

func runStatus(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "status")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	sortBy := fs.String("sort", "shard", "order of the shard lines: shard, owner, lag or age (largest first)")
	if err := fs.parse(args); err != nil {
		return err
	}
	order, err := leasestatus.ParseOrder(*sortBy)
	if err != nil {
		return usageError{"--sort: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, awsenv.DefaultTimeout)
	defer cancel()
	cfg := app.Config
	rep := StatusReport{Stream: cfg.Kinesis.Stream, LeaseTable: cfg.DynamoDB.LeaseTable}

	kc, err := awsenv.Kinesis(ctx, cfg.Kinesis)
	if err != nil {
		return err
	}
	db, err := awsenv.DynamoDB(ctx, cfg.DynamoDB)
	if err != nil {
		return err
	}
	// Read-only use of the store: no lease is taken, the worker id is only a label.
	store, err := checkpoint.New(checkpoint.Config{Table: cfg.DynamoDB.LeaseTable, WorkerID: "recstream-status", FailoverTime: cfg.Worker.FailoverTime}, db)
	if err != nil {
		return err
	}
	// The three parts are independent reads: ask them at once, so the answer takes as long as
	// the slowest (the lease side at 1,000 shards, bounded by leasestatus.LagTimeout).
	var (
		wg                 sync.WaitGroup
		leases             leasestatus.Report
		modelErr, embedErr string
		model, embeddings  string
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		root, err := openStore(ctx, app, "s3.buckets.artifacts", cfg.S3.Buckets.Artifacts)
		if err != nil {
			modelErr = err.Error()
			return
		}
		if model, err = artifacts.Resolve(ctx, root, artifacts.LatestName); err != nil {
			modelErr = "model version: " + err.Error()
		}
	}()
	go func() {
		defer wg.Done()
		pool, err := pg.Connect(ctx, cfg.Postgres)
		if err != nil {
			embedErr = err.Error()
			return
		}
		defer pool.Close()
		idx, err := inference.NewVectorIndex(pool, cfg.Postgres)
		if err == nil {
			embeddings, err = idx.LiveVersion(ctx)
		}
		if err != nil {
			embedErr = "embeddings version: " + err.Error()
		}
	}()
	leases = leasestatus.Read(ctx, store, kc, cfg.Kinesis.Stream)
	wg.Wait()
	leasestatus.Sort(leases.Shards, order)
	rep.Shards, rep.Workers, rep.Problems = leases.Shards, leases.Workers, leases.Problems
	rep.ModelVersion, rep.EmbeddingsVersion = model, embeddings
	for _, p := range []string{modelErr, embedErr} {
		if p != "" {
			rep.Problems = append(rep.Problems, p)
		}
	}

	if *asJSON {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printStatus(app, rep)
	return nil
}

func printStatus(app *App, rep StatusReport) {
	fmt.Fprintf(app.Stdout, "stream %s, lease table %s\n\n", rep.Stream, rep.LeaseTable)
	printWorkers(app.Stdout, rep.Workers)
	tw := tabwriter.NewWriter(app.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tOWNER\tCOUNTER\tCHECKPOINT\tLAG\tCHECKPOINT AGE\tCLOSED\tPARENT")
	for _, s := range rep.Shards {
		owner := s.Owner
		if owner == "" {
			owner = "-"
		}
		if !s.InLeaseTable {
			owner = "(no lease yet)"
		}
		lag := "?"
		if s.LagMillis != nil {
			lag = (time.Duration(*s.LagMillis) * time.Millisecond).String()
		}
		if s.Error != "" {
			lag = "error: " + s.Error
		}
		cp := s.Checkpoint
		if cp == "" {
			cp = "-"
		}
		parent := s.Parent
		if parent == "" {
			parent = "-"
		}
		if s.LeaseStale {
			owner += " (stale)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%v\t%s\n", s.ShardID, owner, s.LeaseCounter, cp, lag, ageText(s.CheckpointAgeMillis), s.Closed, parent)
	}
	tw.Flush()
	fmt.Fprintf(app.Stdout, "\nmodel version (artifacts latest): %s\nembeddings version (live):        %s\n", orDash(rep.ModelVersion), orDash(rep.EmbeddingsVersion))
	for _, p := range rep.Problems {
		fmt.Fprintf(app.Stdout, "problem: %s\n", p)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ageText(ms *int64) string {
	if ms == nil {
		return "?"
	}
	d := time.Duration(*ms) * time.Millisecond
	if d < time.Second {
		return d.String()
	}
	return d.Round(time.Second).String()
}

func printWorkers(w io.Writer, workers []leasestatus.Worker) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tLEASES\tSTALE")
	total := 0
	for _, wl := range workers {
		name := wl.Worker
		if name == "" {
			name = "(no owner)"
		}
		total += wl.Leases
		fmt.Fprintf(tw, "%s\t%d\t%d\n", name, wl.Leases, wl.Stale)
	}
	fmt.Fprintf(tw, "(open shards)\t%d\t\n", total)
	tw.Flush()
	fmt.Fprintln(w)
}
