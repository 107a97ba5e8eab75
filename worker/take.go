package worker

import (
	"errors"
	"fmt"
	"time"

	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
)

// take expands, decodes, enriches and buffers one batch, flushing at every boundary the data
// decides: before a Kinesis record of a later flush window, and after a Kinesis record that
// fills the buffer (never inside a KPL aggregate, so a checkpoint never skips part of one).
// It returns false when the processor stopped or died on the way (nothing of the batch is then
// kept unless a flush already made it durable and checkpointed it).
//
// The page is taken in chunks of whole Kinesis records holding at most flush.max_records user
// records (or one aggregate, of at most aggregateLimit), so memory is bounded by one chunk, not
// by the page: a 10 MB page of aggregates of tiny records would otherwise expand to millions
// of user records at once. Flush boundaries do not depend on the chunks
// (they are decided record by record against the buffer), so the objects written are the same
// whatever the chunk size.
func (p *processor) take(in *kcl.ProcessRecordsInput) bool {
	p.s.deps.Metrics.RecordsIn.WithLabelValues(p.shard).Add(float64(len(in.Records)))
	takenAt := p.s.now()
	limit := p.s.chunkRecords
	if limit <= 0 {
		limit = p.s.cfg.Flush.MaxRecords
	}
	var chunk []userRecord
	for _, r := range in.Records {
		urs := expandRecord(r, aggregateLimit(p.s.cfg.Flush))
		if len(chunk) > 0 && len(chunk)+len(urs) > limit {
			if !p.takeChunk(chunk, in.Checkpointer, takenAt) {
				return false
			}
			clear(chunk) // let the chunk's payloads and errors be collected
			chunk = chunk[:0]
		}
		chunk = append(chunk, urs...)
	}
	return len(chunk) == 0 || p.takeChunk(chunk, in.Checkpointer, takenAt)
}

// takeChunk decodes, enriches and buffers the user records of whole Kinesis records (see take).
// takenAt is when the batch was handed over: the shard's pending clock restarts there when a
// flush inside the batch leaves records behind.
func (p *processor) takeChunk(urs []userRecord, cp kcl.IRecordProcessorCheckpointer, takenAt time.Time) bool {
	cfg := p.s.cfg
	p.batch = urs
	defer func() { p.batch = nil }()
	events := make([]Event, len(urs))
	bad := make([]error, len(urs))
	var valid []int
	lim := Limits{MaxBytes: cfg.MaxEventBytes, MaxBrowseHistory: cfg.MaxBrowseHistory, RejectUnknown: cfg.UnknownFields == "reject"}
	for i := range urs {
		if urs[i].bad != nil {
			continue
		}
		events[i], bad[i] = Decode(urs[i].data, lim)
		if bad[i] != nil {
			continue
		}
		for _, f := range events[i].Unknown {
			p.s.countUnknownField(f)
		}
		p.s.countUnknownOther(events[i].UnknownOmitted)
		valid = append(valid, i)
	}
	enriched := make([]enrichment, len(urs))
	if len(valid) > 0 && !p.enrich(events, valid, enriched) {
		return false
	}
	for i := range urs {
		u := &urs[i]
		// alone: a record without an arrival time taken into an empty buffer (see fileUntimed)
		// is flushed on its own.
		alone := false
		if u.reason == ReasonMissingArrivalTime {
			alone = p.fileUntimed(u)
		}
		if u.first && !p.buf.empty() && p.buf.windowOf(u.arrival) > p.buf.window {
			if !p.flush(cp) {
				return false
			}
		}
		if p.buf.late(u.arrival) {
			p.s.deps.Metrics.LateRecords.Inc()
		}
		if p.buf.empty() {
			// A flush earlier in this batch reset the pending clock: the records taken from
			// here on wait since the batch was handed over, so a later flush that never
			// succeeds (S3 down at the tip) shows the shard stalled.
			p.health.holding(takenAt)
		}
		rejected := func(reason Reason, field, msg string) {
			p.buf.addError(ErrorRecord{Reason: reason, Field: field, Message: msg, Stream: p.s.stream, ShardID: p.shard,
				SequenceNumber: u.seq, SubSequenceNumber: u.sub, PartitionKey: u.pk, ArrivalTime: u.arrival, PayloadBase64: u.data}, len(u.data))
		}
		switch e := &enriched[i]; {
		case u.bad != nil:
			rejected(u.reason, "", u.bad.Error())
		case bad[i] != nil:
			var de *DecodeError
			errors.As(bad[i], &de)
			rejected(de.Reason, de.Field, de.Msg)
		case e.err != nil:
			rejected(ReasonRecommendFailed, "", e.err.Error())
		default:
			ev := &events[i]
			anchor := ev.Anchor()
			sim := e.similar
			if sim == nil {
				sim = []SimilarItem{}
			}
			p.buf.addRecord(OutputRecord{
				SessionID: ev.SessionID, CustomerNumber: ev.CustomerNumber, City: ev.City, Country: ev.Country,
				CreditLimit: ev.CreditLimit, BrowseHistory: ev.BrowseHistory, RecommendedItems: e.items,
				SimilarItems: Similar{ProductCode: anchor, SimilarItems: sim},
				ShardID:      p.shard, SequenceNumber: u.seq, SubSequenceNumber: u.sub, ArrivalTime: u.arrival, ModelVersion: e.version,
			}, len(u.data))
		}
		p.publishBuffered()
		p.taken++
		if u.last && (alone || p.buf.full()) && !p.flush(cp) {
			return false
		}
	}
	return true
}

// untimedEpoch files a record without an arrival time that has no record before it in its
// flush: the Unix epoch, a time no real record has, so the errors/ key says "no time".
var untimedEpoch = time.Unix(0, 0).UTC()

// fileUntimed gives a Kinesis record without ApproximateArrivalTimestamp (rejected as
// missing_arrival_time) the time its errors/ entry is filed under, deterministically: the
// buffer is a pure function of the stream since the last checkpoint, so a replay files it the
// same way. With records buffered it takes the last one's arrival time: it joins the current
// flush window and hour partition and cuts nothing. In an empty buffer it takes the Unix
// epoch and reports alone: it is then flushed on its own, so that neither a tip flush (its
// window is long over) nor the records after it can move a boundary a replay would not.
func (p *processor) fileUntimed(u *userRecord) (alone bool) {
	const msg = "; filed under "
	if p.buf.empty() {
		u.arrival = untimedEpoch
		u.bad = fmt.Errorf("%w%s%s (the Unix epoch: no record before it in its flush)", u.bad, msg, untimedEpoch.Format(time.RFC3339))
		return true
	}
	u.arrival = p.buf.lastArrival
	u.bad = fmt.Errorf("%w%sthe arrival time of the record before it in its flush, %s", u.bad, msg, u.arrival.Format(time.RFC3339Nano))
	return false
}
