package worker

import (
	"bytes"
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"
)

type object struct {
	key  string // a Store key, or a table data file's location when table is set
	body []byte
	// table: a data file of the Iceberg table (Table.PutData), not a Store object.
	table bool
}

// flush writes every object of the buffer (output objects, then one errors/ object per hour
// partition of rejected records), then checkpoints at the last sequence number it holds. It
// returns false when the processor died (the buffer is then dropped).
func (p *processor) flush(cp kcl.IRecordProcessorCheckpointer) bool {
	start := time.Now()
	m := p.s.deps.Metrics
	var objs []object
	var dataFiles []string
	if p.s.deps.Table != nil {
		var ok bool
		if objs, dataFiles, ok = p.tableFiles(); !ok {
			return false
		}
	}
	for _, part := range p.buf.partitions() {
		if p.s.deps.Table != nil {
			break
		}
		body, err := encodeObject(p.s.cfg.Format, part.items)
		if err != nil {
			// A record the encoder refuses is a bug, not an outage: retrying cannot help.
			p.log.Error("encode output object", zap.Error(err))
			p.die("encode failed", err)
			return false
		}
		h := p.buf.head(part.hour)
		objs = append(objs, object{key: ObjectKey(p.s.stream, p.shard, part.hour, h.seq, h.sub, FormatExt(p.s.cfg.Format)), body: body})
	}
	for _, part := range p.buf.errorPartitions() {
		body, err := encodeErrors(part.items)
		if err != nil {
			p.log.Error("encode errors object", zap.Error(err))
			p.die("encode failed", err)
			return false
		}
		h := p.buf.head(part.hour)
		objs = append(objs, object{key: ErrorKey(p.s.stream, p.shard, part.hour, h.seq, h.sub), body: body})
	}
	var bytesOut int
	for _, o := range objs {
		put := func(ctx context.Context) error { return p.s.deps.Store.Put(ctx, o.key, bytes.NewReader(o.body)) }
		if o.table {
			put = func(ctx context.Context) error { return p.s.deps.Table.PutData(ctx, o.key, o.body) }
		}
		if p.retry(opPut, o.key, put) != nil {
			return false
		}
		bytesOut += len(o.body)
	}
	if p.s.deps.Table != nil {
		// Whatever landed meanwhile is checkpointed first; then this flush's commit is asked
		// for, and its checkpoint waits for it (and for those before it) to land. A flush with
		// no data file (every record rejected) and nothing in flight is checkpointed at once.
		if !p.settle(settleLook) {
			return false
		}
		if len(dataFiles) > 0 || len(p.pending) > 0 {
			p.submit(cp, dataFiles, len(objs), bytesOut, start)
			return true
		}
	}
	// Checkpoint only now: every object of the buffer is durable (Put returned), so a crash
	// before this line replays the buffer and rewrites the same keys.
	last := p.buf.last
	if !p.checkpointAt(cp, last, len(p.buf.recs), 1) {
		return false
	}
	for _, e := range p.buf.errs {
		m.RecordsFailed.WithLabelValues(p.shard, string(e.Reason)).Inc()
	}
	m.FlushObjects.WithLabelValues(p.shard).Add(float64(len(objs)))
	m.FlushBytes.WithLabelValues(p.shard).Add(float64(bytesOut))
	d := time.Since(start)
	m.FlushDuration.WithLabelValues(p.shard).Observe(d.Seconds())
	fields := []zap.Field{zap.String("seq_first", p.buf.first), zap.String("seq_last", last), zap.Int("records", p.buf.n),
		zap.Int("rejected", len(p.buf.errs)), zap.Int("objects", len(objs)), zap.Int("bytes", bytesOut), zap.Duration("duration", d)}
	if len(objs) > 0 {
		fields = append(fields, zap.String("s3_key", objs[0].key))
	}
	p.log.Info("flushed batch", fields...)
	p.buf.reset()
	p.publishBuffered()
	return true
}

// checkpointAt moves the shard's checkpoint to last once the records up to it are durable
// (objects written, or their commit landed), with retries, and counts the records written out.
// flushes is how many flushes the checkpoint makes durable. It returns false when the processor
// stopped or died on the way.
func (p *processor) checkpointAt(cp kcl.IRecordProcessorCheckpointer, last string, records, flushes int) bool {
	if p.s.beforeCheckpoint != nil {
		p.s.beforeCheckpoint(flushes)
	}
	if p.retry(opCheckpoint, "", func(context.Context) error { return cp.Checkpoint(aws.String(last)) }) != nil {
		return false
	}
	p.setCheckpoint(last)
	p.health.checkpointed(p.s.now())
	m := p.s.deps.Metrics
	m.RecordsOut.WithLabelValues(p.shard).Add(float64(records))
	m.LastCheckpointTS.WithLabelValues(p.shard).SetToCurrentTime()
	return true
}
