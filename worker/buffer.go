package worker

import "time"

// buffer holds one shard's processed but not yet written records, in sequence order. It is
// used by one goroutine (the shard's consumer) only.
type buffer struct {
	limits  FlushConfig
	recs    []OutputRecord
	errs    []ErrorRecord
	n       int    // records taken, valid and rejected
	bytes   int    // raw event bytes taken
	first   string // sequence number of the first record taken
	last    string // sequence number of the last record taken: the checkpoint after a flush
	firstAt time.Time
}

func newBuffer(limits FlushConfig) *buffer { return &buffer{limits: limits} }

func (b *buffer) empty() bool { return b.n == 0 }

// addRecord takes one enriched record; now is the clock reading when it was taken.
func (b *buffer) addRecord(r OutputRecord, size int, now time.Time) {
	b.take(r.SequenceNumber, size, now)
	b.recs = append(b.recs, r)
}

// addError takes one rejected record.
func (b *buffer) addError(e ErrorRecord, size int, now time.Time) {
	b.take(e.SequenceNumber, size, now)
	b.errs = append(b.errs, e)
}

func (b *buffer) take(seq string, size int, now time.Time) {
	if b.n == 0 {
		b.first = seq
		b.firstAt = now
	}
	b.n++
	b.bytes += size
	b.last = seq
}

// full reports whether a size or count limit is reached.
func (b *buffer) full() bool {
	return b.n >= b.limits.MaxRecords || b.bytes >= b.limits.MaxBytes
}

// due reports whether the buffer must be flushed now: a limit is reached, or its oldest record
// has waited max_age.
func (b *buffer) due(now time.Time) bool {
	if b.n == 0 {
		return false
	}
	return b.full() || now.Sub(b.firstAt) >= b.limits.MaxAge
}

func (b *buffer) reset() {
	// Keep the slices' capacity (bounded by max_records) so that the next buffer does not
	// regrow them (a bad producer fills errs as fast as a good one fills recs); clear them so
	// flushed records and payloads can be collected.
	clear(b.recs)
	clear(b.errs)
	b.recs, b.errs = b.recs[:0], b.errs[:0]
	b.n, b.bytes, b.first, b.last = 0, 0, "", ""
	b.firstAt = time.Time{}
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
