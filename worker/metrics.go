package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the worker's Prometheus series. Names are listed in docs/worker.md; the label
// shard_id is the Kinesis shard id.
type Metrics struct {
	RecordsIn        *prometheus.CounterVec   // records received from GetRecords
	RecordsOut       *prometheus.CounterVec   // records written to output objects (replays count again)
	RecordsFailed    *prometheus.CounterVec   // records written to errors/, by reason
	MillisBehind     *prometheus.GaugeVec     // MillisBehindLatest of the last GetRecords
	FlushObjects     *prometheus.CounterVec   // objects written (output and errors/)
	FlushBytes       *prometheus.CounterVec   // bytes written
	FlushDuration    *prometheus.HistogramVec // flush latency: encode + upload + checkpoint
	Retries          *prometheus.CounterVec   // retried failures, by operation
	LeasesHeld       prometheus.Gauge         // shards this process is processing
	LeasesLost       *prometheus.CounterVec   // leases lost while processing (buffer dropped)
	LastCheckpointTS *prometheus.GaugeVec     // unix time of the last checkpoint; age = time() - value
	CheckpointAge    *prometheus.GaugeVec     // seconds since the shard's last checkpoint (grows while stuck)
	ShardStalled     *prometheus.GaugeVec     // 1 while the shard holds records and has not checkpointed for stall_after
	UnknownFields    *prometheus.CounterVec   // fields dropped by unknown_fields: ignore, by name (capped)
	// LateRecords counts records of a flush window the worker had already closed at the
	// stream's tip (no shard label: a sum is what tells window_grace is too short).
	LateRecords prometheus.Counter
	// StoragePermanentErrors counts writes refused for a reason no retry fixes (AccessDenied,
	// NoSuchBucket, …), by bucket and S3 error code.
	StoragePermanentErrors *prometheus.CounterVec
	// BudgetInUse is the estimated bytes of buffers and pages charged to
	// worker.buffer_budget_bytes; BudgetWait the time shards waited for it (one observation
	// per wait, before the next page is fetched).
	BudgetInUse prometheus.Gauge
	BudgetWait  prometheus.Histogram
}

// NewMetrics creates the series and registers them on reg (nil: not registered, for tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	shard := []string{"shard_id"}
	m := &Metrics{
		RecordsIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_records_in_total",
			Help: "Records received from Kinesis."}, shard),
		RecordsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_records_out_total",
			Help: "Enriched records written to output objects."}, shard),
		RecordsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_records_failed_total",
			Help: "Malformed records written to errors/, by reason."}, []string{"shard_id", "reason"}),
		MillisBehind: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recstream_worker_millis_behind_latest",
			Help: "MillisBehindLatest reported by the last GetRecords."}, shard),
		FlushObjects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_flush_objects_total",
			Help: "Objects written, output and errors/."}, shard),
		FlushBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_flush_bytes_total",
			Help: "Bytes written to object storage."}, shard),
		FlushDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "recstream_worker_flush_duration_seconds",
			Help: "Time to encode, upload and checkpoint one buffer.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}, shard),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_retries_total",
			Help: "Retried failures, by operation (recommend, put, checkpoint, lease)."}, []string{"shard_id", "op"}),
		LeasesHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "recstream_worker_leases_held",
			Help: "Shards this process is currently processing."}),
		LeasesLost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_leases_lost_total",
			Help: "Leases lost while processing; the shard's buffer was dropped for replay."}, shard),
		LastCheckpointTS: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recstream_worker_last_checkpoint_timestamp_seconds",
			Help: "Unix time of the shard's last checkpoint; checkpoint age = time() - value."}, shard),
		CheckpointAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recstream_worker_checkpoint_age_seconds",
			Help: "Seconds since the shard's last checkpoint (or since this worker took it); updated every second, so it grows while the shard is stuck."}, shard),
		ShardStalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recstream_worker_shard_stalled",
			Help: "1 while the shard holds records and has not checkpointed for longer than worker.stall_after."}, shard),
		UnknownFields: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_unknown_fields_total",
			Help: "Event fields not in the schema, dropped (worker.unknown_fields: ignore), by field name; names past the first 32 count as other."}, []string{"field"}),
		LateRecords: prometheus.NewCounter(prometheus.CounterOpts{Name: "recstream_worker_late_records_total",
			Help: "Records that arrived in a flush window already closed at the stream's tip (after flush.window_grace); each such batch is written in an object of its own."}),
		StoragePermanentErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_storage_permanent_errors_total",
			Help: "Object writes refused for a reason no retry fixes (AccessDenied, NoSuchBucket, ...), by bucket and S3 error code."}, []string{"bucket", "code"}),
		BudgetInUse: prometheus.NewGauge(prometheus.GaugeOpts{Name: "recstream_worker_buffer_budget_bytes_in_use",
			Help: "Estimated bytes of shard buffers and GetRecords pages charged to worker.buffer_budget_bytes."}),
		BudgetWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recstream_worker_buffer_budget_wait_seconds",
			Help: "Time a shard waited for worker.buffer_budget_bytes before its next page was fetched.", Buckets: prometheus.ExponentialBuckets(0.01, 4, 9)}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.RecordsIn, m.RecordsOut, m.RecordsFailed, m.MillisBehind, m.FlushObjects,
		m.FlushBytes, m.FlushDuration, m.Retries, m.LeasesHeld, m.LeasesLost, m.LastCheckpointTS, m.CheckpointAge,
		m.ShardStalled, m.UnknownFields, m.LateRecords, m.StoragePermanentErrors, m.BudgetInUse, m.BudgetWait} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register worker metrics: %w", err)
		}
	}
	return m, nil
}
