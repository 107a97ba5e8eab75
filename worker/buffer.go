package worker

import "time"

// buffer holds one shard's processed but not yet written records, in sequence order. It is
// used by one goroutine (the shard's consumer) only.
//
// Its contents are a pure function of the stream: it starts after a checkpoint (a previous
// flush's end), takes whole Kinesis records (never part of an aggregate), and is cut when the
// next record belongs to a later flush window (ApproximateArrivalTimestamp / max_age), when a
// count or size limit is reached, or when the stream proves its window complete. So a replay
// from any checkpoint rebuilds the same buffers and rewrites the same objects, byte for byte.
type buffer struct {
	limits FlushConfig
	recs   []OutputRecord
	errs   []ErrorRecord
	n      int    // records taken, valid and rejected
	bytes  int    // raw event bytes taken
	first  string // sequence number of the first record taken
	last   string // sequence number of the last record taken: the checkpoint after a flush
	window int64  // flush window of the first record taken
	heads  []partHead
}

// partHead names the objects of one hour partition of a flush after the first record taken in
// that hour, valid or rejected: the output object and the errors/ object share it.
type partHead struct {
	hour time.Time
	seq  string
	sub  int64
}

func newBuffer(limits FlushConfig) *buffer { return &buffer{limits: limits} }

func (b *buffer) empty() bool { return b.n == 0 }

// windowOf is the flush window of an arrival time: windows are max_age long and aligned to
// the Unix epoch, so every worker and every replay cuts at the same instants.
func (b *buffer) windowOf(arrival time.Time) int64 {
	return arrival.UnixNano() / int64(b.limits.MaxAge)
}

// windowEnd is when the buffer's window ends.
func (b *buffer) windowEnd() time.Time {
	return time.Unix(0, (b.window+1)*int64(b.limits.MaxAge))
}

// addRecord takes one enriched record.
func (b *buffer) addRecord(r OutputRecord, size int) {
	b.take(r.SequenceNumber, r.SubSequenceNumber, r.ArrivalTime, size)
	b.recs = append(b.recs, r)
}

// addError takes one rejected record.
func (b *buffer) addError(e ErrorRecord, size int) {
	b.take(e.SequenceNumber, e.SubSequenceNumber, e.ArrivalTime, size)
	b.errs = append(b.errs, e)
}

func (b *buffer) take(seq string, sub int64, arrival time.Time, size int) {
	if b.n == 0 {
		b.first = seq
		b.window = b.windowOf(arrival)
	}
	hour := arrival.UTC().Truncate(time.Hour)
	if b.head(hour) == nil {
		b.heads = append(b.heads, partHead{hour: hour, seq: seq, sub: sub})
	}
	b.n++
	b.bytes += size
	b.last = seq
}

// head is the first record taken in hour, or nil.
func (b *buffer) head(hour time.Time) *partHead {
	for i := range b.heads {
		if b.heads[i].hour.Equal(hour) {
			return &b.heads[i]
		}
	}
	return nil
}

// full reports whether a size or count limit is reached.
func (b *buffer) full() bool {
	return b.n >= b.limits.MaxRecords || b.bytes >= b.limits.MaxBytes
}

func (b *buffer) reset() {
	// Keep the slices' capacity (bounded by max_records) so that the next buffer does not
	// regrow them (a bad producer fills errs as fast as a good one fills recs); clear them so
	// flushed records and payloads can be collected.
	clear(b.recs)
	clear(b.errs)
	b.recs, b.errs, b.heads = b.recs[:0], b.errs[:0], b.heads[:0]
	b.n, b.bytes, b.first, b.last, b.window = 0, 0, "", "", 0
}

// errorPart is the rejected records of one hour partition, in sequence order.
type errorPart struct {
	hour time.Time
	errs []ErrorRecord
}

// errorPartitions splits the rejected records by UTC hour of arrival, like partitions: one
// errors/ object per hour partition per flush, however many records a bad producer sends.
func (b *buffer) errorPartitions() []errorPart {
	if len(b.errs) == 0 {
		return nil
	}
	// Common case: one hour, one part sharing the buffer's slice (no copy).
	first := b.errs[0].ArrivalTime.UTC().Truncate(time.Hour)
	one := true
	for i := range b.errs {
		if !b.errs[i].ArrivalTime.UTC().Truncate(time.Hour).Equal(first) {
			one = false
			break
		}
	}
	if one {
		return []errorPart{{hour: first, errs: b.errs}}
	}
	var parts []errorPart
	idx := map[time.Time]int{}
	for _, e := range b.errs {
		h := e.ArrivalTime.UTC().Truncate(time.Hour)
		i, ok := idx[h]
		if !ok {
			i = len(parts)
			idx[h] = i
			parts = append(parts, errorPart{hour: h})
		}
		parts[i].errs = append(parts[i].errs, e)
	}
	return parts
}

// objectPart is the records of one hour partition, in sequence order.
type objectPart struct {
	hour time.Time
	recs []OutputRecord
}

// partitions splits the buffered records by UTC hour of arrival. Records keep their sequence
// order inside each part, and parts are in order of their first record (records arrive in sequence order), so a batch
// spanning an hour boundary gives one object per hour.
func (b *buffer) partitions() []objectPart {
	if len(b.recs) == 0 {
		return nil
	}
	// Common case: one hour, one part sharing the buffer's slice (no copy).
	first := b.recs[0].ArrivalTime.UTC().Truncate(time.Hour)
	one := true
	for i := range b.recs {
		if !b.recs[i].ArrivalTime.UTC().Truncate(time.Hour).Equal(first) {
			one = false
			break
		}
	}
	if one {
		return []objectPart{{hour: first, recs: b.recs}}
	}
	idx := map[time.Time]int{}
	var parts []objectPart
	for _, r := range b.recs {
		h := r.ArrivalTime.UTC().Truncate(time.Hour)
		i, ok := idx[h]
		if !ok {
			i = len(parts)
			idx[h] = i
			parts = append(parts, objectPart{hour: h})
		}
		parts[i].recs = append(parts[i].recs, r)
	}
	return parts
}
