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
	// lastSub is the sub-sequence number of the last record taken (its index in a KPL
	// aggregate; the processor never cuts an aggregate, so it is the aggregate's last).
	lastSub int64
	window  int64 // flush window of the first record taken
	// lastArrival is the arrival time of the last record taken: a record without one is
	// filed under it (see processor.take).
	lastArrival time.Time
	heads       []partHead
	// tipClosed: every window before it was closed at the stream's tip (a flush decided by the
	// clock, not by the data). Not reset by a flush: a record of such a window is late.
	tipClosed int64
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

// closeAtTip records that the buffer's window is being flushed at the stream's tip: a record
// of it (or of an earlier window) taken after this is late, and starts an object of its own
// where the window rule would not cut (a replay cuts there too, from the live keys).
func (b *buffer) closeAtTip() { b.tipClosed = max(b.tipClosed, b.window+1) }

// late reports whether a record arriving at arrival belongs to a window closed at the tip.
func (b *buffer) late(arrival time.Time) bool { return b.windowOf(arrival) < b.tipClosed }

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
	b.lastSub = sub
	b.lastArrival = arrival
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
	b.n, b.bytes, b.first, b.last, b.lastSub, b.window, b.lastArrival = 0, 0, "", "", 0, 0, time.Time{}
}

// hourPart is the items of one hour partition of a flush, in sequence order.
type hourPart[T any] struct {
	hour  time.Time
	items []T
}

// byHour splits items by the UTC hour of their arrival. Items keep their sequence order inside
// each part, and parts are in order of their first item, so a flush spanning an hour boundary
// gives one object per hour. The common case, one hour, shares the buffer's slice (no copy).
func byHour[T any](items []T, arrival func(*T) time.Time) []hourPart[T] {
	if len(items) == 0 {
		return nil
	}
	first := arrival(&items[0]).UTC().Truncate(time.Hour)
	one := true
	for i := range items {
		if !arrival(&items[i]).UTC().Truncate(time.Hour).Equal(first) {
			one = false
			break
		}
	}
	if one {
		return []hourPart[T]{{hour: first, items: items}}
	}
	idx := map[time.Time]int{}
	var parts []hourPart[T]
	for i := range items {
		h := arrival(&items[i]).UTC().Truncate(time.Hour)
		j, ok := idx[h]
		if !ok {
			j = len(parts)
			idx[h] = j
			parts = append(parts, hourPart[T]{hour: h})
		}
		parts[j].items = append(parts[j].items, items[i])
	}
	return parts
}

// partitions splits the buffered output records by hour (one output object each).
func (b *buffer) partitions() []hourPart[OutputRecord] {
	return byHour(b.recs, func(r *OutputRecord) time.Time { return r.ArrivalTime })
}

// errorPartitions splits the rejected records by hour: one errors/ object per hour partition
// per flush, however many records a bad producer sends.
func (b *buffer) errorPartitions() []hourPart[ErrorRecord] {
	return byHour(b.errs, func(e *ErrorRecord) time.Time { return e.ArrivalTime })
}
