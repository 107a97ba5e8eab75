package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/sirupsen/logrus"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	kclcfg "github.com/vmware/vmware-go-kcl-v2/clientlibrary/config"
	kclworker "github.com/vmware/vmware-go-kcl-v2/clientlibrary/worker"
	kclzap "github.com/vmware/vmware-go-kcl-v2/logger/zap"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/recstream/recstream/internal/awsenv"
)

// ErrShutdownTimeout is returned by Run when the drain did not finish within
// worker.shutdown_timeout; buffered records are replayed by the next owner.
var ErrShutdownTimeout = errors.New("shutdown did not finish within worker.shutdown_timeout")

// Stream names the source stream and the lease table.
type Stream struct {
	Kinesis  awsenv.KinesisConfig
	DynamoDB awsenv.DynamoDBConfig
}

// Worker runs the KCL worker that consumes every shard it can lease.
type Worker struct {
	cfg      Config
	stream   Stream
	deps     Deps
	kc       *kinesis.Client
	chk      chk.Checkpointer
	workerID string

	// beforeCheckpoint, when set (tests only), runs after a flush's uploads (or its commit) and
	// before its checkpoint: the crash window the exactly-once argument is about. flushes is how
	// many flushes that checkpoint covers: one in the Hive layout, one or more in a table
	// (commits that land together are checkpointed once).
	beforeCheckpoint func(flushes int)

	running atomic.Pointer[shared] // the processors' shared state while Run runs

	startup *Startup // waits out the library's start; nil: Run makes its own
}

// SetStartup makes Run report the library's start through st (the process's start-up
// waiter, whose /readyz check and worker.start_timeout clock it shares). Call before Run.
func (w *Worker) SetStartup(st *Startup) { w.startup = st }

// SetTable makes the worker commit its output to an Iceberg table (worker.output.table:
// iceberg) through t. Call before Run.
func (w *Worker) SetTable(t Table) { w.deps.Table = t }

// monitorInterval is how often the shard gauges (checkpoint age, lag, stalled) are updated.
const monitorInterval = time.Second

// Health reports why the worker should not be considered ready: shards that hold records but
// have not checkpointed for longer than worker.stall_after (named in the error), and a
// permanent object-storage error (AccessDenied, NoSuchBucket) on the last write. nil when
// neither, and before Run. Safe for concurrent use; /readyz calls it.
func (w *Worker) Health() error {
	s := w.running.Load()
	if s == nil {
		return nil
	}
	return s.health(time.Now())
}

// monitor updates the per-shard gauges every monitorInterval and logs stalled shards, until
// ctx ends.
func (s *shared) monitor(ctx context.Context, log *zap.Logger) {
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	logged := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		s.logStalls(log, s.observe(now), logged, now)
	}
}

// New validates its arguments and returns a Worker; it does no I/O. kc is the Kinesis client
// (awsenv.Kinesis). checkpointer is the lease/checkpoint store; nil uses the library's default
// DynamoDB checkpointer on stream.DynamoDB (for development only: its writes are not fenced).
// When the checkpointer implements Lease, uploads are fenced by its HeldUntil.
func New(cfg Config, stream Stream, deps Deps, kc *kinesis.Client, checkpointer chk.Checkpointer) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, configError("worker", err)
	}
	if err := stream.Kinesis.Validate(); err != nil {
		return nil, configError("kinesis", err)
	}
	if err := stream.DynamoDB.Validate(); err != nil {
		return nil, configError("dynamodb", err)
	}
	switch {
	case kc == nil:
		return nil, errors.New("worker: nil kinesis client")
	case deps.Store == nil:
		return nil, errors.New("worker: nil object store")
	case deps.Recommender == nil:
		return nil, errors.New("worker: nil recommender")
	case deps.Log == nil:
		return nil, errors.New("worker: nil logger")
	case deps.K < 1:
		return nil, fmt.Errorf("worker: k must be >= 1, got %d", deps.K)
	}
	if deps.Metrics == nil {
		deps.Metrics, _ = NewMetrics(nil)
	}
	id := cfg.WorkerID
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	// The library de-aggregates KPL records itself, unsafely: hide them from it (see kpl.go).
	return &Worker{cfg: cfg, stream: stream, deps: deps, kc: withHiddenAggregates(kc), chk: checkpointer, workerID: id}, nil
}

// ID is the lease owner name of this worker.
func (w *Worker) ID() string { return w.workerID }

func ms(d time.Duration) int { return int(d / time.Millisecond) }

// kclConfig translates our config into the library's.
func (w *Worker) kclConfig(log *zap.Logger) *kclcfg.KinesisClientLibConfiguration {
	c := w.cfg
	pos := kclcfg.TRIM_HORIZON
	if c.InitialPosition == "LATEST" {
		pos = kclcfg.LATEST
	}
	// The library logs "localTPSExceededError so sleep for a second" at info level every time
	// it throttles itself: sample repeated messages so a busy or idle stream cannot flood logs.
	kclLog := log.With(zap.String("component", "kcl")).WithOptions(zap.WrapCore(func(core zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(core, time.Minute, 3, 0)
	}))
	k := kclcfg.NewKinesisClientLibConfig(w.stream.DynamoDB.LeaseTable, w.stream.Kinesis.Stream, w.stream.Kinesis.Region, w.workerID).
		WithTableName(w.stream.DynamoDB.LeaseTable).
		WithDynamoDBEndpoint(w.stream.DynamoDB.Endpoint).
		WithKinesisEndpoint(w.stream.Kinesis.Endpoint).
		WithInitialPositionInStream(pos).
		WithMaxRecords(c.MaxRecords).
		WithIdleTimeBetweenReadsInMillis(ms(c.IdleTimeBetweenReads)).
		WithCallProcessRecordsEvenForEmptyRecordList(true). // so an idle shard still flushes on age
		WithFailoverTimeMillis(ms(c.FailoverTime)).
		WithLeaseRefreshPeriodMillis(ms(c.FailoverTime / 4)).
		// Renew four times per failover time: HeldUntil then stays above failover*3/4 minus a
		// DynamoDB round trip, well above lease_safety_margin (at most failover/2).
		WithLeaseRefreshWaitTime(ms(c.FailoverTime / 4)).
		// The library's event loop starts at most one shard consumer per pass. Its pass runs
		// every leasePass (jittered ±50 %), not every shard_sync_interval: with our guard and
		// store a pass costs no I/O (shard list cached, leases answered from the store's lease
		// view, refreshed by one Scan per shard_sync_interval), so a worker can start the
		// consumers of many leases (at start, or taking over a dead worker's) within seconds.
		WithShardSyncIntervalMillis(ms(leasePass(c.ShardSyncInterval))).
		WithLogger(kclzap.NewZapLogger(kclLog.WithOptions(zap.AddCallerSkip(1)).Sugar()))
	// A child shard is leased only once its parents reached SHARD_END (checkpoint.Leasing),
	// so the library's parent poll finds the parent finished at its first probe.
	k.ParentShardPollIntervalMillis = ms(c.ShardSyncInterval)
	if c.LeaseStealingInterval > 0 {
		// The store's ClaimShard / ListActiveWorkers implement the hand-over: the holder stops
		// renewing when it sees the claim, its consumer ends (its buffer is replayed by the
		// claimant from the checkpoint) and releases the lease, which only the claimant may
		// then take. A claim not taken within the failover time is open to everyone again.
		// The library asks ListActiveWorkers on every pass; the store claims at most once per
		// lease_stealing_interval, only past a +1 imbalance.
		k = k.WithLeaseStealing(true).WithLeaseStealingIntervalMillis(ms(c.LeaseStealingInterval))
		k.LeaseStealingClaimTimeoutMillis = ms(c.FailoverTime)
	}
	return k
}

// Run consumes the stream until ctx is done, then drains: it stops taking records, flushes and
// checkpoints every buffer, releases the leases, and returns nil. If the drain takes longer
// than worker.shutdown_timeout it abandons in-flight writes, logs what will be replayed, and
// returns ErrShutdownTimeout. Run returns an error at once if the library cannot start
// (lease table or stream unreachable).
func (w *Worker) Run(ctx context.Context) error {
	if w.cfg.Output.Table == "iceberg" && w.deps.Table == nil {
		return errors.New("worker.output.table is iceberg but no table was set (SetTable)")
	}
	log := w.deps.Log.With(zap.String("component", "worker"), zap.String("stream", w.stream.Kinesis.Stream))
	kc := w.kclConfig(w.deps.Log)
	inner := w.chk
	if inner == nil {
		inner = chk.NewDynamoCheckpoint(kc)
	}
	guard := newLeaseGuard(inner, w.workerID, w.cfg, w.deps.Log)
	drainCtx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	var stopping atomic.Bool
	s := &shared{cfg: w.cfg, stream: w.stream.Kinesis.Stream, deps: w.deps, lease: guard, guard: guard,
		ctx: drainCtx, stopping: &stopping, live: map[string]*processor{}, beforeCheckpoint: w.beforeCheckpoint,
		budget: newMemBudget(w.cfg.BufferBudgetBytes, w.deps.Metrics)}
	guard.attach(drainCtx, s.forget, w.deps.Metrics)
	w.running.Store(s)
	monCtx, stopMonitor := context.WithCancel(context.Background())
	defer stopMonitor()
	go s.monitor(monCtx, log)

	kw := kclworker.NewWorker(s, kc).WithKinesis(guard.kinesis(w.kc)).WithCheckpointer(guard)
	// The library's Start fails at once when the lease table cannot be described (DynamoDB
	// throttling or dark for a moment, even right after start-up's own wait succeeded). That
	// is an outage, not a reason to exit: it is retried like every start-up step (one line
	// per attempt, /readyz red, worker.start_timeout). A failed Start has started no
	// goroutine (it fails in its initialisation), so calling it again is safe.
	st := w.startup
	if st == nil {
		st = NewStartup(w.cfg, w.deps.Log)
	}
	if err := st.Wait(ctx, "dynamodb", func(context.Context) error { return kw.Start() }); err != nil {
		if ctx.Err() != nil {
			log.Info("worker stopped during start-up", zap.String("reason", err.Error()))
			return nil
		}
		return fmt.Errorf("start kcl worker for stream %s: %w", w.stream.Kinesis.Stream, err)
	}
	st.Started()
	log.Info("worker started", zap.String("worker_id", w.workerID), zap.String("lease_table", w.stream.DynamoDB.LeaseTable))
	coordCtx, stopCoordinating := context.WithCancel(context.Background())
	coordDone := make(chan struct{})
	co, coordinated := inner.(leaseCoordinator)
	coordinated = coordinated && w.cfg.LeaderAssigned
	if coordinated {
		go func() {
			defer close(coordDone)
			co.Coordinate(coordCtx)
		}()
	} else {
		close(coordDone)
	}
	<-ctx.Done()

	start := time.Now()
	if coordinated {
		// Hand the leases over before stopping: successors are told (a claim on each lease)
		// and watch the rows while this worker goes on processing for the hand-over delay;
		// the releases of the drain then start them at once.
		hctx, cancel := context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout/4)
		delay := co.HandOff(hctx)
		cancel()
		if delay > 0 {
			time.Sleep(min(delay, w.cfg.ShutdownTimeout/4))
		}
		stopCoordinating()
		<-coordDone
		co.ResignLeadership()
	}
	stopCoordinating()
	stopping.Store(true)
	log.Info("shutting down", zap.Duration("shutdown_timeout", w.cfg.ShutdownTimeout))
	done := make(chan struct{})
	go func() {
		kw.Shutdown() // waits for every shard consumer, with no deadline of its own
		close(done)
	}()
	// Keep a little of the bound for abandoning writes and exiting.
	slack := min(2*time.Second, w.cfg.ShutdownTimeout/5)
	timer := time.NewTimer(w.cfg.ShutdownTimeout - slack - time.Since(start))
	defer timer.Stop()
	select {
	case <-done:
		if coordinated {
			// Every lease is released: the presence row goes too (after an abandoned drain it
			// stays, marked draining, so the leader gives this worker nothing until it expires).
			rctx, cancel := context.WithTimeout(context.Background(), slack)
			co.Retire(rctx)
			cancel()
		}
		log.Info("worker stopped", zap.Duration("duration", time.Since(start)))
		return nil
	case <-timer.C:
	}
	abandon()
	select {
	case <-done:
	case <-time.After(slack / 2):
	}
	// The shard goroutines may still be running: read only what they publish atomically.
	for _, r := range s.snapshot() {
		log.Error("shutdown timed out, shard will be replayed", zap.String("shard_id", r.shard),
			zap.String("checkpoint", r.checkpoint), zap.Int64("records", r.buffered))
	}
	return ErrShutdownTimeout
}

// RouteLogrus sends the logrus standard logger's output (which the KCL library uses directly
// in places) into log with component=kcl, at log's level. It changes process-global state;
// cmd calls it once at start.
func RouteLogrus(log *zap.Logger) {
	l := log.With(zap.String("component", "kcl"))
	logrus.SetOutput(io.Discard)
	logrus.SetLevel(logrus.InfoLevel)
	if l.Core().Enabled(zapcore.DebugLevel) {
		logrus.SetLevel(logrus.DebugLevel)
	}
	logrus.AddHook(logrusHook{l})
}

type logrusHook struct{ log *zap.Logger }

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h logrusHook) Fire(e *logrus.Entry) error {
	fields := make([]zap.Field, 0, len(e.Data))
	for k, v := range e.Data {
		fields = append(fields, zap.Any(k, v))
	}
	switch e.Level {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		h.log.Error(e.Message, fields...)
	case logrus.WarnLevel:
		h.log.Warn(e.Message, fields...)
	case logrus.InfoLevel:
		h.log.Info(e.Message, fields...)
	default:
		h.log.Debug(e.Message, fields...)
	}
	return nil
}
