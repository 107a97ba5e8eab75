package worker

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/middleware"
	kplrec "github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto" //nolint:staticcheck // the awslabs record types are generated for the v1 API
	"google.golang.org/protobuf/encoding/protowire"
)

// KPL aggregated records (the Kinesis Producer Library's default): one Kinesis record holds
// many user records as
//
//	magic (F3 89 9A C2) | protobuf AggregatedRecord | MD5 of the protobuf
//
// and every user record shares the Kinesis record's sequence number, told apart by its index,
// the sub-sequence number.
//
// vmware-go-kcl-v2 v1.0.0 de-aggregates every GetRecords page itself before the record
// processor sees it: it drops the sub-sequence numbers, skips the whole page silently on a
// protobuf error, passes an aggregate with a bad MD5 on as if it were a plain record, drops an
// empty aggregate, and panics (killing the process) on a partition-key index out of range.
// The library is frozen, so recstream takes de-aggregation away from it at a seam it owns: a
// middleware on the Kinesis client handed to the library (hideAggregates) wraps every
// aggregate in an envelope the library does not recognise, and the record processor
// de-aggregates (expandRecord) with full validation: a corrupt aggregate becomes one errors/
// entry (bad_kpl_aggregate) and its neighbours are processed as usual.

var kplMagic = []byte{0xF3, 0x89, 0x9A, 0xC2}

// envelope marks a record the middleware rewrote. Its first byte is 0x00, which no JSON event
// and no KPL aggregate starts with; the kind byte follows.
var envelope = []byte{0x00, 'R', 'S', 'K'}

const (
	envAggregate byte = 'A' // a KPL aggregate, hidden from the library
	envPlain     byte = 'P' // a plain record that happened to start with the envelope bytes
)

// ReasonBadKPLAggregate: a record with the KPL magic that is not a valid aggregate (bad MD5,
// bad protobuf, a partition-key index out of range, no user records, more user records than
// aggregateLimit). The whole aggregate is written to errors/ as one entry; its neighbours are
// processed.
const ReasonBadKPLAggregate Reason = "bad_kpl_aggregate"

// hideAggregates rewrites a GetRecords page before the library sees it: an aggregate gets the
// envelope (kind A) so the library's de-aggregation passes it through untouched, and a plain
// record that starts with the envelope bytes is escaped (kind P) so unwrapping is unambiguous.
// Other records are not copied.
func hideAggregates(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("recstream.HideKPLAggregates",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if err != nil {
				return out, md, err
			}
			if page, ok := out.Result.(*kinesis.GetRecordsOutput); ok {
				for i := range page.Records {
					r := &page.Records[i]
					switch {
					case bytes.HasPrefix(r.Data, kplMagic):
						r.Data = wrap(envAggregate, r.Data)
					case bytes.HasPrefix(r.Data, envelope):
						r.Data = wrap(envPlain, r.Data)
					}
				}
			}
			return out, md, err
		}), middleware.After)
}

func wrap(kind byte, data []byte) []byte {
	out := make([]byte, 0, len(envelope)+1+len(data))
	out = append(out, envelope...)
	out = append(out, kind)
	return append(out, data...)
}

// withHiddenAggregates returns a copy of kc whose GetRecords pages carry aggregates in the
// envelope.
func withHiddenAggregates(kc *kinesis.Client) *kinesis.Client {
	return kinesis.New(kc.Options(), func(o *kinesis.Options) {
		o.APIOptions = append(o.APIOptions, hideAggregates)
	})
}

// userRecord is one event as the processor takes it: a plain Kinesis record (sub-sequence 0)
// or one user record of a KPL aggregate.
type userRecord struct {
	seq     string // the Kinesis record's sequence number
	sub     int64  // index in the aggregate; 0 for a plain record
	pk      string // the user record's partition key
	arrival time.Time
	data    []byte // the event (or, for a rejected Kinesis record, its whole data)
	// bad: the whole Kinesis record is rejected (a bad aggregate, no arrival time): data goes
	// to errors/ as one entry with reason and this error's text.
	bad    error
	reason Reason
	first  bool // first user record of its Kinesis record
	last   bool // last user record of its Kinesis record: a flush may end after it
}

// ReasonMissingArrivalTime: a Kinesis record without ApproximateArrivalTimestamp (Kinesis always
// sets it, so the page is malformed: a proxy or an emulator dropped it). Without an arrival time
// the record has no flush window and no hour partition, so it is not processed; its whole data
// goes to errors/ as one entry, filed under the arrival time of the record taken before it in
// the same flush (see processor.take), never under a made-up year 0001.
const ReasonMissingArrivalTime Reason = "missing_arrival_time"

// minAggregateLimit is the least user records an aggregate may hold whatever
// flush.max_records says: the most records one GetRecords call returns, and at ~100 bytes an
// event as many as a 1 MiB Kinesis record holds. Only aggregates of tiny records exceed it, so
// lowering flush.max_records never sends a producer's ordinary aggregates to errors/.
const minAggregateLimit = 10000

// aggregateLimit is the most user records one aggregate may hold: flush.max_records, at least
// minAggregateLimit. The processor never cuts an aggregate, so this bounds how far a flush
// overshoots flush.max_records and how many user records a page chunk holds (see take).
func aggregateLimit(f FlushConfig) int { return max(f.MaxRecords, minAggregateLimit) }

// expandRecord turns one Kinesis record into its user records: a plain record as it is, an
// aggregate (enveloped by hideAggregates, or raw when the processor is driven without the
// middleware) de-aggregated and validated. An aggregate of more than maxUserRecords user
// records (aggregateLimit) is rejected whole.
func expandRecord(r ktypes.Record, maxUserRecords int) []userRecord {
	base := userRecord{seq: aws.ToString(r.SequenceNumber), pk: aws.ToString(r.PartitionKey), first: true, last: true}
	data := r.Data
	aggregate := false
	if bytes.HasPrefix(data, envelope) && len(data) > len(envelope) {
		aggregate = data[len(envelope)] == envAggregate
		data = data[len(envelope)+1:]
	} else if bytes.HasPrefix(data, kplMagic) {
		aggregate = true
	}
	if r.ApproximateArrivalTimestamp == nil || r.ApproximateArrivalTimestamp.IsZero() {
		base.data, base.reason = data, ReasonMissingArrivalTime
		base.bad = errors.New("kinesis record has no ApproximateArrivalTimestamp")
		return []userRecord{base}
	}
	base.arrival = r.ApproximateArrivalTimestamp.UTC()
	if !aggregate {
		base.data = data
		return []userRecord{base}
	}
	agg, err := parseAggregate(data, maxUserRecords)
	if err != nil {
		base.data, base.bad, base.reason = data, err, ReasonBadKPLAggregate
		return []userRecord{base}
	}
	out := make([]userRecord, len(agg.Records))
	for i, ur := range agg.Records {
		u := base
		u.sub = int64(i)
		u.pk = agg.PartitionKeyTable[ur.GetPartitionKeyIndex()]
		u.data = ur.Data
		u.first, u.last = i == 0, i == len(agg.Records)-1
		out[i] = u
	}
	return out
}

// userRecordCount is how many user records take makes of recs, expanding one Kinesis record
// at a time (a page is never materialised whole).
func userRecordCount(recs []ktypes.Record, maxUserRecords int) int {
	n := 0
	for _, r := range recs {
		n += len(expandRecord(r, maxUserRecords))
	}
	return n
}

// countAggregateRecords counts the user records (field 3, records) of an AggregatedRecord
// protobuf by walking its top-level fields, without decoding any: a 1 MiB aggregate can hold
// ~175,000 tiny user records, and decoding them all only to reject the aggregate would cost
// tens of MB. ok is false when the bytes are not a well-formed protobuf message.
func countAggregateRecords(body []byte) (n int, ok bool) {
	const recordsField = 3 // AggregatedRecord.records
	for len(body) > 0 {
		num, typ, l := protowire.ConsumeTag(body)
		if l < 0 {
			return 0, false
		}
		body = body[l:]
		l = protowire.ConsumeFieldValue(num, typ, body)
		if l < 0 {
			return 0, false
		}
		body = body[l:]
		if num == recordsField && typ == protowire.BytesType {
			n++
		}
	}
	return n, true
}

// parseAggregate validates and decodes a KPL aggregate (magic included) of at most
// maxUserRecords user records.
func parseAggregate(b []byte, maxUserRecords int) (*kplrec.AggregatedRecord, error) {
	if len(b) <= len(kplMagic)+md5.Size {
		return nil, errors.New("kpl aggregate: too short for magic, protobuf and MD5")
	}
	body := b[len(kplMagic) : len(b)-md5.Size]
	sum := md5.Sum(body)
	if !bytes.Equal(sum[:], b[len(b)-md5.Size:]) {
		return nil, errors.New("kpl aggregate: MD5 mismatch")
	}
	// Count before decoding: an over-limit aggregate is rejected without allocating its
	// records. A malformed body is left to proto.Unmarshal, whose error says what is wrong.
	if n, ok := countAggregateRecords(body); ok && n > maxUserRecords {
		return nil, fmt.Errorf("kpl aggregate: %d user records, more than one aggregate may hold (%d: flush.max_records, at least %d)", n, maxUserRecords, minAggregateLimit)
	}
	agg := &kplrec.AggregatedRecord{}
	if err := proto.Unmarshal(body, agg); err != nil {
		return nil, fmt.Errorf("kpl aggregate: protobuf: %w", err)
	}
	if len(agg.Records) == 0 {
		return nil, errors.New("kpl aggregate: no user records")
	}
	if len(agg.Records) > maxUserRecords {
		return nil, fmt.Errorf("kpl aggregate: %d user records, more than one aggregate may hold (%d: flush.max_records, at least %d)", len(agg.Records), maxUserRecords, minAggregateLimit)
	}
	for i, r := range agg.Records {
		if r == nil || r.PartitionKeyIndex == nil {
			return nil, fmt.Errorf("kpl aggregate: record %d has no partition key index", i)
		}
		if k := r.GetPartitionKeyIndex(); k >= uint64(len(agg.PartitionKeyTable)) {
			return nil, fmt.Errorf("kpl aggregate: record %d: partition key index %d out of range (table of %d)", i, k, len(agg.PartitionKeyTable))
		}
		if r.ExplicitHashKeyIndex != nil && r.GetExplicitHashKeyIndex() >= uint64(len(agg.ExplicitHashKeyTable)) {
			return nil, fmt.Errorf("kpl aggregate: record %d: explicit hash key index %d out of range (table of %d)", i, r.GetExplicitHashKeyIndex(), len(agg.ExplicitHashKeyTable))
		}
	}
	return agg, nil
}

// Aggregate builds a KPL aggregated record of user records, all under partition key pk, in the
// format the Kinesis Producer Library writes (tests, the producer simulator).
func Aggregate(pk string, data [][]byte) ([]byte, error) {
	idx := uint64(0)
	agg := &kplrec.AggregatedRecord{PartitionKeyTable: []string{pk}}
	for _, d := range data {
		agg.Records = append(agg.Records, &kplrec.Record{PartitionKeyIndex: &idx, Data: d})
	}
	body, err := proto.Marshal(agg)
	if err != nil {
		return nil, fmt.Errorf("kpl aggregate: %w", err)
	}
	sum := md5.Sum(body)
	out := append(append(append([]byte{}, kplMagic...), body...), sum[:]...)
	return out, nil
}
