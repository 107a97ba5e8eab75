// Package worker is the KCL stream worker: it consumes user-activity events from Kinesis,
// enriches each with recommendations, and writes exactly-once, date-partitioned Parquet.
package worker

import (
	"fmt"
	"time"

	"github.com/recstream/recstream/internal/icetable"
)

// Config is the `worker` config section.
type Config struct {
	// WorkerID identifies this process in the lease table; "" means hostname-pid.
	WorkerID string `yaml:"worker_id"`
	// InitialPosition is where a shard with no checkpoint starts: TRIM_HORIZON or LATEST.
	InitialPosition string `yaml:"initial_position"`
	// MaxRecords is the GetRecords batch size.
	MaxRecords int `yaml:"max_records"`
	// IdleTimeBetweenReads is the pause between GetRecords calls on a shard.
	IdleTimeBetweenReads time.Duration `yaml:"idle_time_between_reads"`
	// FailoverTime: a lease whose counter has not moved for this long may be taken.
	FailoverTime time.Duration `yaml:"failover_time"`
	// ShardSyncInterval is how often the worker looks for new shards and free leases.
	ShardSyncInterval time.Duration `yaml:"shard_sync_interval"`
	// LeaseStealingInterval is how often a worker holding fewer than its share of the shards
	// claims one from the busiest worker (the library's lease stealing, a polite hand-over
	// through the lease table); 0 turns it off, so a joining worker only gets free or expired
	// leases.
	LeaseStealingInterval time.Duration `yaml:"lease_stealing_interval"`
	// LeaderAssigned turns on leader-assigned leases (checkpoint/leader.go): one worker
	// Scans the lease table and assigns leases, the others read only the rows that name them,
	// so the table's cost stops growing with the worker count. Off: every worker Scans every
	// shard_sync_interval.
	LeaderAssigned bool `yaml:"leader_assigned"`
	// LeaseSafetyMargin: uploads start only while the lease has at least this long left.
	LeaseSafetyMargin time.Duration `yaml:"lease_safety_margin"`
	// ShutdownTimeout bounds SIGTERM drain (below ECS's 30 s stop timeout).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// StartTimeout bounds the wait for PostgreSQL, the artifacts bucket, DynamoDB and Kinesis
	// at start-up; past it the worker exits non-zero naming the dependency. 0 waits forever
	// (the worker starts serving whenever they come back, without a restart).
	StartTimeout time.Duration `yaml:"start_timeout"`
	// MaxEventBytes rejects larger records to errors/.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// MaxBrowseHistory rejects events with longer browse histories to errors/.
	MaxBrowseHistory int `yaml:"max_browse_history"`
	// Format of output objects: parquet or jsonl.
	Format string `yaml:"format"`
	// Flush decides when a shard's buffer becomes an object.
	Flush FlushConfig `yaml:"flush"`
	// Output chooses what the flushed records become: Hive-partitioned objects or an Iceberg
	// table.
	Output OutputConfig `yaml:"output"`
	// Retry bounds backoff on PostgreSQL / S3 outages.
	Retry RetryConfig `yaml:"retry"`
	// StatusInterval is the period of the per-shard status log line (0: off).
	StatusInterval time.Duration `yaml:"status_interval"`
	// UnknownFields decides what an event field the schema does not have does: "ignore" (the
	// event is processed, the field dropped and counted in unknown_fields_total) or "reject"
	// (the event goes to errors/ as unknown_field).
	UnknownFields string `yaml:"unknown_fields"`
	// RecommendTimeout bounds one Recommender call (user tower + pgvector queries). A call for
	// several events that takes longer is split in halves; a single event's is retried like
	// an outage.
	RecommendTimeout time.Duration `yaml:"recommend_timeout"`
	// RecommendBatch bounds the events of one Recommender call: a GetRecords page is enriched
	// in calls of at most this many, so that a call's latency (which grows with its users)
	// stays well under RecommendTimeout on a large catalog. A call that still times out is
	// split in halves.
	RecommendBatch int `yaml:"recommend_batch"`
	// BufferBudgetBytes bounds the estimated memory of every shard's buffer and GetRecords
	// page together, worker-wide: past it a shard waits for others' flushes before the next
	// page is fetched (backpressure; nothing is dropped and no flush is cut differently, see
	// budget.go).
	BufferBudgetBytes int64 `yaml:"buffer_budget_bytes"`
	// StallAfter: a shard holding records that has not checkpointed for this long is stalled
	// (recstream_worker_shard_stalled, /readyz red, an error log line).
	StallAfter time.Duration `yaml:"stall_after"`
}

// FlushConfig: a shard's buffer is flushed when any limit is reached.
type FlushConfig struct {
	MaxRecords int `yaml:"max_records"` // records taken (valid and rejected)
	MaxBytes   int `yaml:"max_bytes"`   // raw event bytes taken
	// MaxAge is the length of a flush window: records are grouped by
	// ApproximateArrivalTimestamp into windows of this length aligned to the epoch, and a
	// window's buffer is flushed once the stream proves it complete (>= 1s, divides an hour).
	MaxAge time.Duration `yaml:"max_age"`
	// WindowGrace: a window is complete when a read at the stream's tip finds nothing new this
	// long after the window's end (covers producer→reader propagation and clock skew).
	WindowGrace time.Duration `yaml:"window_grace"`
}

// OutputConfig is the `worker.output` section.
type OutputConfig struct {
	// Table: "hive" (objects under year=/month=/day=/hour=, the default) or "iceberg" (data
	// files committed to an Iceberg table, see internal/icetable).
	Table string `yaml:"table"`
	// Iceberg configures the table when Table is "iceberg".
	Iceberg icetable.Config `yaml:"iceberg"`
}

// Validate reports the first invalid key, relative to the output section.
func (c OutputConfig) Validate(format string) error {
	switch c.Table {
	case "hive":
		return nil
	case "iceberg":
		if format != "parquet" {
			return fmt.Errorf("table: iceberg needs format parquet, got format %q", format)
		}
		if err := c.Iceberg.Validate(); err != nil {
			return fmt.Errorf("iceberg.%w", err)
		}
		return nil
	}
	return fmt.Errorf("table: must be hive or iceberg, got %q", c.Table)
}

// RetryConfig is capped exponential backoff with jitter for PostgreSQL, S3 and DynamoDB
// failures; retries are bounded by the lease and the shutdown deadline, not by a count.
type RetryConfig struct {
	InitialBackoff time.Duration `yaml:"initial_backoff"` // first pause
	MaxBackoff     time.Duration `yaml:"max_backoff"`     // cap; each pause doubles up to it
}

// DefaultConfig matches config.yaml.
func DefaultConfig() Config {
	return Config{
		InitialPosition:       "TRIM_HORIZON",
		MaxRecords:            10000,
		IdleTimeBetweenReads:  250 * time.Millisecond,
		FailoverTime:          10 * time.Second,
		ShardSyncInterval:     500 * time.Millisecond,
		LeaseStealingInterval: 10 * time.Second,
		LeaseSafetyMargin:     3 * time.Second,
		ShutdownTimeout:       25 * time.Second,
		MaxEventBytes:         64 << 10,
		MaxBrowseHistory:      100,
		Format:                "parquet",
		Flush:                 FlushConfig{MaxRecords: 10000, MaxBytes: 32 << 20, MaxAge: time.Minute, WindowGrace: time.Second},
		Output:                OutputConfig{Table: "hive", Iceberg: icetable.DefaultConfig()},
		Retry:                 RetryConfig{InitialBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second},
		StatusInterval:        30 * time.Second,
		UnknownFields:         "ignore",
		RecommendTimeout:      10 * time.Second,
		RecommendBatch:        500,
		StallAfter:            5 * time.Minute,
		BufferBudgetBytes:     256 << 20,
	}
}

// Validate reports the first invalid field, its sections' (flush, retry) included: a Config
// built in code reaches New and Replay without the config loader, and flush.max_age 0 would
// divide by zero in windowOf, retry.initial_backoff 0 spin. Errors start with the key path
// relative to the worker section ("flush.max_age: ...").
func (c Config) Validate() error {
	if err := c.Flush.Validate(); err != nil {
		return fmt.Errorf("flush.%w", err)
	}
	if err := c.Retry.Validate(); err != nil {
		return fmt.Errorf("retry.%w", err)
	}
	if err := c.Output.Validate(c.Format); err != nil {
		return fmt.Errorf("output.%w", err)
	}
	switch c.InitialPosition {
	case "TRIM_HORIZON", "LATEST":
	default:
		return fmt.Errorf("initial_position: must be TRIM_HORIZON or LATEST, got %q", c.InitialPosition)
	}
	if c.MaxRecords < 1 || c.MaxRecords > 10000 {
		return fmt.Errorf("max_records: must be between 1 and 10000 (the GetRecords limit), got %d", c.MaxRecords)
	}
	if c.IdleTimeBetweenReads < 200*time.Millisecond {
		// The library allows itself 5 GetRecords per second per shard and logs each time an
		// idle shard polls faster.
		return fmt.Errorf("idle_time_between_reads: must be >= 200ms, got %s", c.IdleTimeBetweenReads)
	}
	if c.FailoverTime < time.Second {
		return fmt.Errorf("failover_time: must be >= 1s, got %s", c.FailoverTime)
	}
	if c.ShardSyncInterval <= 0 {
		return fmt.Errorf("shard_sync_interval: must be > 0, got %s", c.ShardSyncInterval)
	}
	if c.LeaseStealingInterval != 0 && c.LeaseStealingInterval < time.Second {
		return fmt.Errorf("lease_stealing_interval: must be 0 (off) or >= 1s, got %s", c.LeaseStealingInterval)
	}
	if c.LeaseSafetyMargin <= 0 || c.LeaseSafetyMargin > c.FailoverTime/2 {
		// Leases are renewed every failover_time/4, so HeldUntil stays above 3/4 of it.
		return fmt.Errorf("lease_safety_margin: must be > 0 and <= failover_time/2 (%s), got %s", c.FailoverTime/2, c.LeaseSafetyMargin)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout: must be > 0, got %s", c.ShutdownTimeout)
	}
	if c.StartTimeout < 0 {
		return fmt.Errorf("start_timeout: must be >= 0 (0 waits forever), got %s", c.StartTimeout)
	}
	if c.MaxEventBytes < 256 || c.MaxEventBytes > 1<<20 {
		return fmt.Errorf("max_event_bytes: must be between 256 and 1048576 (the Kinesis record limit), got %d", c.MaxEventBytes)
	}
	if c.MaxBrowseHistory < 1 {
		return fmt.Errorf("max_browse_history: must be >= 1, got %d", c.MaxBrowseHistory)
	}
	switch c.Format {
	case "parquet", "jsonl":
	default:
		return fmt.Errorf("format: must be parquet or jsonl, got %q", c.Format)
	}
	if c.StatusInterval < 0 {
		return fmt.Errorf("status_interval: must be >= 0, got %s", c.StatusInterval)
	}
	switch c.UnknownFields {
	case "ignore", "reject":
	default:
		return fmt.Errorf("unknown_fields: must be ignore or reject, got %q", c.UnknownFields)
	}
	if c.RecommendTimeout < 100*time.Millisecond {
		return fmt.Errorf("recommend_timeout: must be >= 100ms, got %s", c.RecommendTimeout)
	}
	if c.RecommendBatch < 1 || c.RecommendBatch > 10000 {
		return fmt.Errorf("recommend_batch: must be between 1 and 10000 (a GetRecords page), got %d", c.RecommendBatch)
	}
	if c.BufferBudgetBytes < 1<<20 {
		return fmt.Errorf("buffer_budget_bytes: must be >= 1048576 (1 MiB), got %d", c.BufferBudgetBytes)
	}
	if hold := c.Flush.MaxAge + c.Flush.WindowGrace + c.IdleTimeBetweenReads; c.StallAfter <= hold {
		// A healthy shard holds a window's records until the window is proven complete.
		return fmt.Errorf("stall_after: must be > flush.max_age + flush.window_grace + idle_time_between_reads (%s), got %s", hold, c.StallAfter)
	}
	return nil
}

// Validate reports the first invalid field.
func (c FlushConfig) Validate() error {
	if c.MaxRecords < 1 {
		return fmt.Errorf("max_records: must be >= 1, got %d", c.MaxRecords)
	}
	if c.MaxBytes < 1024 {
		return fmt.Errorf("max_bytes: must be >= 1024, got %d", c.MaxBytes)
	}
	if c.MaxAge < time.Second || time.Hour%c.MaxAge != 0 {
		// Windows that divide the hour never straddle an hour partition.
		return fmt.Errorf("max_age: must be >= 1s and divide an hour, got %s", c.MaxAge)
	}
	if c.WindowGrace < 0 || c.WindowGrace > time.Minute {
		return fmt.Errorf("window_grace: must be between 0 and 1m, got %s", c.WindowGrace)
	}
	return nil
}

// Validate reports the first invalid field.
func (c RetryConfig) Validate() error {
	if c.InitialBackoff <= 0 {
		return fmt.Errorf("initial_backoff: must be > 0, got %s", c.InitialBackoff)
	}
	if c.MaxBackoff < c.InitialBackoff {
		return fmt.Errorf("max_backoff: must be >= initial_backoff (%s), got %s", c.InitialBackoff, c.MaxBackoff)
	}
	return nil
}

// configError names the key path of a section's Validate error as the config loader does:
// "flush.max_age: ..." from section worker becomes "worker.flush.max_age: ...".
func configError(section string, err error) error {
	return fmt.Errorf("%s.%w", section, err)
}
