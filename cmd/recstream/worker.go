package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/httpserve"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/worker"
)

func runWorker(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "worker")
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg := app.Config
	log := app.Log
	worker.RouteLogrus(log)
	// The buffer budget bounds what the worker keeps; the soft limit keeps the garbage
	// collector from letting the heap float to twice that.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		prev := debug.SetMemoryLimit(worker.SoftMemoryLimit(cfg.Worker))
		defer debug.SetMemoryLimit(prev) // runWorker may be called in-process (tests)
	}

	// Build everything first (no I/O), so a wiring mistake fails before any connection.
	sc, err := newStreamClients(ctx, app)
	if err != nil {
		return err
	}
	out, artifacts, kc, db := sc.out, sc.artifacts, sc.kinesis, sc.dynamo
	wcfg := cfg.Worker
	if wcfg.WorkerID == "" {
		host, _ := os.Hostname()
		wcfg.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	leaseMetrics, err := checkpoint.NewMetrics(reg)
	if err != nil {
		return err
	}
	store, err := checkpoint.New(checkpoint.Config{Table: cfg.DynamoDB.LeaseTable, WorkerID: wcfg.WorkerID,
		FailoverTime: wcfg.FailoverTime, Logger: log, Metrics: leaseMetrics, ClaimIndex: wcfg.LeaderAssigned}, db)
	if err != nil {
		return usageError{err.Error()}
	}
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		return err
	}
	// One observation per GetRecords batch: user tower + both pgvector round trips.
	queryLatency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recstream_worker_vector_query_seconds",
		Help:    "Time to answer one batch's recommendations (user tower and pgvector queries), failures included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	reg.MustRegister(queryLatency)

	// The model is loaded after the dependencies answer; the worker is built now, so that a
	// wiring mistake fails before any connection.
	rec := &recommender{latency: queryLatency}
	w, err := worker.New(wcfg, worker.Stream{Kinesis: cfg.Kinesis, DynamoDB: cfg.DynamoDB}, worker.Deps{
		Store: out, Recommender: rec, K: cfg.Inference.K, Metrics: metrics, Log: log,
		IsLeaseLost: func(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) },
	}, kc, store)
	if err != nil {
		return usageError{err.Error()}
	}

	// The HTTP server comes up first: while start-up waits for a dependency, /healthz answers
	// (the process is alive: no restart loop) and /readyz says what it waits for.
	st := worker.NewStartup(wcfg, log)
	auxRoot, stopAux := context.WithCancel(ctx)
	defer stopAux()
	aux, auxCtx := errgroup.WithContext(auxRoot)
	var srv *httpserve.Server
	if cfg.Metrics.Listen != "" {
		if srv, err = httpserve.New(cfg.Metrics.Listen, reg, log); err != nil {
			return usageError{err.Error()}
		}
		srv.AddCheck("startup", func(context.Context) error { return st.Health() })
		aux.Go(func() error { return srv.Run(auxCtx) })
	}
	// Waits end with auxCtx: SIGTERM, or the HTTP server failing to listen.
	svc, closeModel, err := serveModel(auxCtx, app, artifacts, reg, st)
	if err == nil {
		defer closeModel()
		err = waitForStream(auxCtx, st, store, kc, cfg.Kinesis.Stream)
	}
	if err != nil {
		stopAux()
		return startupFailed(ctx, aux, err, log)
	}
	// st.Started comes from w.Run, once the library has started too (it describes the lease
	// table again and may meet an outage there).
	pool := svc.Pool
	rec.svc = svc.Service // before Run: nothing calls the recommender earlier

	// The model reloader and the metrics server stop with ctx; the worker drains after it.
	aux.Go(func() error { return svc.Run(auxCtx) })
	if srv != nil {
		srv.AddCheck("postgres", func(ctx context.Context) error { return pool.Ping(ctx) })
		srv.AddCheck("dynamodb", func(ctx context.Context) error {
			_, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(cfg.DynamoDB.LeaseTable)})
			return err
		})
		// Stalled shards (named) and a permanent storage error (bucket and code).
		srv.AddCheck("shards", func(context.Context) error { return w.Health() })
		// The live embeddings version's model is the one served (names both when not).
		srv.AddCheck("model", func(context.Context) error { return svc.Health() })
	}
	w.SetStartup(st)
	stopTable := func() {}
	if wcfg.Output.Table == "iceberg" {
		committer, closeCat, err := openTable(auxCtx, app, sc.s3, wcfg.Output.Iceberg, reg)
		if err != nil {
			stopAux()
			return startupFailed(ctx, aux, err, log)
		}
		defer closeCat()
		w.SetTable(committer)
		// The committer outlives SIGTERM: the drain's last flushes wait for their commits.
		commitCtx, stopCommit := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); _ = committer.Run(commitCtx) }()
		stopTable = func() { stopCommit(); <-done }
	}
	runErr := w.Run(ctx)
	stopTable()
	if runErr != nil {
		// The worker ended on its own (not by SIGTERM): stop the server and the reloader too,
		// or the process would live on serving /healthz while processing nothing.
		stopAux()
	}
	auxErr := aux.Wait()
	if errors.Is(runErr, worker.ErrShutdownTimeout) {
		return exitCodeError{exitFailure, runErr}
	}
	if runErr != nil {
		return runErr
	}
	if auxErr != nil && ctx.Err() == nil {
		return auxErr
	}
	log.Info("worker exited", zap.String("worker_id", w.ID()))
	return nil
}

// recommender adapts *inference.Service to worker.Recommender and times each batch.
type recommender struct {
	svc     *inference.Service
	latency prometheus.Observer
}

func (r recommender) Recommend(ctx context.Context, users []worker.UserFeatures, anchors []string, k int) (worker.Recommendations, error) {
	if r.latency != nil {
		defer func(t0 time.Time) { r.latency.Observe(time.Since(t0).Seconds()) }(time.Now())
	}
	in := make([]inference.UserFeatures, len(users))
	for i, u := range users {
		in[i] = inference.UserFeatures{City: u.City, Country: u.Country, CreditLimit: u.CreditLimit}
	}
	res, err := r.svc.Recommend(ctx, in, anchors, k)
	if err != nil {
		// A live version without its model (ErrModelUnavailable) is an outage, not bad input:
		// it is retried (readiness and recstream_worker_model_mismatch show it).
		if inference.IsInputError(err) && !errors.Is(err, inference.ErrModelUnavailable) {
			// This input fails again whenever it is retried: let the worker isolate it.
			err = fmt.Errorf("%w: %w", worker.ErrDeterministic, err)
		}
		return worker.Recommendations{}, err
	}
	out := worker.Recommendations{Version: res.ModelVersion, ForUser: make([][]worker.ScoredItem, len(res.Recommended)),
		Similar: make(map[string][]worker.SimilarItem, len(anchors))}
	for i, items := range res.Recommended {
		out.ForUser[i] = make([]worker.ScoredItem, len(items))
		for j, it := range items {
			out.ForUser[i][j] = worker.ScoredItem{ID: it.ID, Score: it.Score}
		}
	}
	for j, a := range anchors {
		if j >= len(res.Similar) || res.Similar[j] == nil {
			continue // unknown to the model: empty similar_items, not an error
		}
		sim := make([]worker.SimilarItem, len(res.Similar[j]))
		for i, it := range res.Similar[j] {
			sim[i] = worker.SimilarItem{ID: it.ID, Distance: it.Distance}
		}
		out.Similar[a] = sim
	}
	return out, nil
}

// servedModel is the inference service with the PostgreSQL pool it queries.
type servedModel struct {
	*inference.Service
	Pool *pgxpool.Pool
}

// serveModel migrates the vector schema, connects to PostgreSQL and loads the live version's
// model: what the worker and replay need to enrich events. reg (optional) receives the
// model-mismatch gauge. The returned func closes the pool.
//
// With st (the worker) each step is waited for until its dependency answers (see
// worker.Startup) and the error returned is st.Wait's; without (replay, a one-shot job) each
// step runs once and fails the command.
func serveModel(ctx context.Context, app *App, artifacts objstore.Store, reg prometheus.Registerer, st *worker.Startup) (servedModel, func(), error) {
	cfg := app.Config
	fail := func(step string, err error) error {
		if st != nil {
			return err // st.Wait's: interrupted, or start_timeout naming the dependency
		}
		if step != "" {
			err = fmt.Errorf("%s: %w", step, err)
		}
		return exitCodeError{exitFailure, err}
	}
	// The schema may be new (first deployment): migrate it, so that the error below says what
	// is missing (no embeddings loaded yet) rather than which relation.
	if err := startStep(ctx, st, "postgres", func(ctx context.Context) error {
		_, err := migratePostgres(ctx, app)
		return err
	}); err != nil {
		return servedModel{}, nil, fail("", err)
	}
	var pool *pgxpool.Pool
	if err := startStep(ctx, st, "postgres", func(ctx context.Context) (err error) {
		pool, err = pg.Connect(ctx, cfg.Postgres)
		return err
	}); err != nil {
		return servedModel{}, nil, fail("connect postgres", err)
	}
	index, err := inference.NewVectorIndex(pool, cfg.Postgres)
	if err != nil {
		pool.Close()
		return servedModel{}, nil, err
	}
	svc, err := inference.NewService(cfg.Inference, artifacts, index, app.Log)
	if err != nil {
		pool.Close()
		return servedModel{}, nil, usageError{err.Error()}
	}
	if reg != nil {
		// 1 while the live embeddings version has no loadable model: batches wait rather than
		// be answered by a mismatched pair, and readiness is red (see the runbook).
		mismatch := prometheus.NewGauge(prometheus.GaugeOpts{Name: "recstream_worker_model_mismatch",
			Help: "1 while the live embeddings version has no loadable model (batches wait, /readyz is red)."})
		reg.MustRegister(mismatch)
		svc.SetMismatchObserver(func(m bool) {
			if m {
				mismatch.Set(1)
			} else {
				mismatch.Set(0)
			}
		})
	}
	if err := startStep(ctx, st, "postgres", func(ctx context.Context) error {
		err := svc.Load(ctx)
		switch {
		case err == nil:
		case errors.Is(err, inference.ErrNoLiveVersion):
			err = &worker.DependencyError{Dependency: "postgres", Err: err,
				Action: "load a model's embeddings first (recstream train, then recstream batch embeddings)"}
		case errors.Is(err, inference.ErrModelUnavailable) && errors.Is(err, objstore.ErrNotExist):
			err = &worker.DependencyError{Dependency: "s3", Err: err,
				Action: "publish the live version's model (recstream train) or load a version that has one (recstream batch embeddings, or --rollback)"}
		case errors.Is(err, inference.ErrModelUnavailable):
			// The live version was read: what failed is reading its artifacts.
			err = &worker.DependencyError{Dependency: "s3", Err: fmt.Errorf("artifacts %s: %w", artifacts.URL(""), err)}
		}
		return err
	}); err != nil {
		pool.Close()
		var de *worker.DependencyError
		if st == nil && errors.As(err, &de) && de.Action != "" {
			err = fmt.Errorf("%w: %s", err, de.Action)
		}
		return servedModel{}, nil, fail("load model", err)
	}
	return servedModel{Service: svc, Pool: pool}, pool.Close, nil
}

// startStep runs attempt under st's start-up wait for dep, or once when st is nil.
func startStep(ctx context.Context, st *worker.Startup, dep string, attempt func(context.Context) error) error {
	if st == nil {
		return attempt(ctx)
	}
	return st.Wait(ctx, dep, attempt)
}

// waitForStream waits until the lease table exists (created when missing) and the stream is
// readable: the KCL library's Start fails at once without the table, and without the stream
// its event loop only logs, so the wait happens here, where /readyz can say so.
func waitForStream(ctx context.Context, st *worker.Startup, store *checkpoint.Store, kc *kinesis.Client, stream string) error {
	if err := st.Wait(ctx, "dynamodb", store.EnsureTable); err != nil {
		return err
	}
	return st.Wait(ctx, "kinesis", func(ctx context.Context) error {
		// ListShards (which the task role grants: the worker lists shards anyway) answers only
		// for a readable stream: ResourceNotFoundException when it is missing,
		// ResourceInUseException while it is being created.
		if _, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream), MaxResults: aws.Int32(1)}); err != nil {
			return fmt.Errorf("list shards of %s: %w", stream, err)
		}
		return nil
	})
}

// startupFailed ends a start-up that did not complete: SIGTERM during the wait exits cleanly,
// worker.start_timeout exits non-zero naming the dependency, and the HTTP server failing to
// listen returns its error.
func startupFailed(ctx context.Context, aux *errgroup.Group, err error, log *zap.Logger) error {
	auxErr := aux.Wait() // the caller stopped the server; when it failed, that ended the wait
	var te *worker.StartTimeoutError
	switch {
	case errors.As(err, &te):
		return exitCodeError{exitFailure, fmt.Errorf("start-up: %w", err)}
	case ctx.Err() != nil:
		log.Info("worker stopped during start-up", zap.String("component", "startup"), zap.String("reason", err.Error()))
		return nil
	case auxErr != nil:
		return auxErr
	}
	return err
}

// streamClients are what the stream commands (worker, replay) talk to.
type streamClients struct {
	s3        *s3.Client
	out       objstore.Store // s3.buckets.recommendations
	artifacts objstore.Store // s3.buckets.artifacts
	kinesis   *kinesis.Client
	dynamo    *dynamodb.Client
}

// newStreamClients builds the stream commands' clients from the config; it does no I/O.
func newStreamClients(ctx context.Context, app *App) (streamClients, error) {
	cfg := app.Config
	var sc streamClients
	s3c, err := awsenv.S3(ctx, cfg.S3)
	if err != nil {
		return sc, err
	}
	sc.s3 = s3c
	if sc.out, err = objstore.Open(cfg.S3.Buckets.Recommendations, s3c); err != nil {
		return sc, usageError{err.Error()}
	}
	if sc.artifacts, err = objstore.Open(cfg.S3.Buckets.Artifacts, s3c); err != nil {
		return sc, usageError{err.Error()}
	}
	if sc.kinesis, err = awsenv.Kinesis(ctx, cfg.Kinesis); err != nil {
		return sc, err
	}
	if sc.dynamo, err = awsenv.DynamoDB(ctx, cfg.DynamoDB); err != nil {
		return sc, err
	}
	return sc, nil
}
