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
// de-aggregates (expand) with full validation: a corrupt aggregate becomes one errors/ entry
// (bad_kpl_aggregate) and its neighbours are processed as usual.

var kplMagic = []byte{0xF3, 0x89, 0x9A, 0xC2}

// envelope marks a record the middleware rewrote. Its first byte is 0x00, which no JSON event
// and no KPL aggregate starts with; the kind byte follows.
var envelope = []byte{0x00, 'R', 'S', 'K'}

const (
	envAggregate byte = 'A' // a KPL aggregate, hidden from the library
	envPlain     byte = 'P' // a plain record that happened to start with the envelope bytes
)

// ReasonBadKPLAggregate: a record with the KPL magic that is not a valid aggregate (bad MD5,
// bad protobuf, a partition-key index out of range, no user records). The whole aggregate is
// written to errors/ as one entry; its neighbours are processed.
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
	data    []byte // the event (or, for a bad aggregate, the whole aggregate)
	bad     error  // a bad aggregate: data goes to errors/ as bad_kpl_aggregate
	first   bool   // first user record of its Kinesis record
	last    bool   // last user record of its Kinesis record: a flush may end after it
}

// expand turns a GetRecords batch into user records: plain records as they are, aggregates
// (enveloped by hideAggregates, or raw when the processor is driven without the middleware)
// de-aggregated and validated.
func expand(recs []ktypes.Record) []userRecord {
	out := make([]userRecord, 0, len(recs))
	for _, r := range recs {
		base := userRecord{seq: aws.ToString(r.SequenceNumber), pk: aws.ToString(r.PartitionKey),
			arrival: aws.ToTime(r.ApproximateArrivalTimestamp).UTC(), first: true, last: true}
		data := r.Data
		aggregate := false
		if bytes.HasPrefix(data, envelope) && len(data) > len(envelope) {
			aggregate = data[len(envelope)] == envAggregate
			data = data[len(envelope)+1:]
		} else if bytes.HasPrefix(data, kplMagic) {
			aggregate = true
		}
		if !aggregate {
			base.data = data
			out = append(out, base)
			continue
		}
		agg, err := parseAggregate(data)
		if err != nil {
			base.data, base.bad = data, err
			out = append(out, base)
			continue
		}
		for i, ur := range agg.Records {
			u := base
			u.sub = int64(i)
			u.pk = agg.PartitionKeyTable[ur.GetPartitionKeyIndex()]
			u.data = ur.Data
			u.first, u.last = i == 0, i == len(agg.Records)-1
			out = append(out, u)
		}
	}
	return out
}

// maxAggregateRecords bounds the user records of one aggregate: a Kinesis record holds at most
// 1 MiB, and a user record takes at least a few bytes.
const maxAggregateRecords = 1 << 20

// parseAggregate validates and decodes a KPL aggregate (magic included).
func parseAggregate(b []byte) (*kplrec.AggregatedRecord, error) {
	if len(b) <= len(kplMagic)+md5.Size {
		return nil, errors.New("kpl aggregate: too short for magic, protobuf and MD5")
	}
	body := b[len(kplMagic) : len(b)-md5.Size]
	sum := md5.Sum(body)
	if !bytes.Equal(sum[:], b[len(b)-md5.Size:]) {
		return nil, errors.New("kpl aggregate: MD5 mismatch")
	}
	agg := &kplrec.AggregatedRecord{}
	if err := proto.Unmarshal(body, agg); err != nil {
		return nil, fmt.Errorf("kpl aggregate: protobuf: %w", err)
	}
	if len(agg.Records) == 0 {
		return nil, errors.New("kpl aggregate: no user records")
	}
	if len(agg.Records) > maxAggregateRecords {
		return nil, fmt.Errorf("kpl aggregate: %d user records", len(agg.Records))
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
