package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// ErrorsPrefix is the key prefix of rejected events (like Firehose's processing-failed/).
const ErrorsPrefix = "errors"

// partitionPath is the Hive-style hour partition of t in UTC: year=YYYY/month=MM/day=DD/hour=HH.
func partitionPath(t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("year=%04d/month=%02d/day=%02d/hour=%02d", t.Year(), int(t.Month()), t.Day(), t.Hour())
}

// ObjectKey is the key of the output object holding the records of one shard, one hour
// partition (from ApproximateArrivalTimestamp, UTC), starting at sequence number firstSeq:
//
//	year=YYYY/month=MM/day=DD/hour=HH/<stream>-<shardId>-<firstSeq>.<ext>
//
// It is a pure function of the object's position in the stream, so a replay after a crash
// rewrites the same key instead of adding a duplicate.
func ObjectKey(stream, shardID string, arrival time.Time, firstSeq, ext string) string {
	return fmt.Sprintf("%s/%s-%s-%s.%s", partitionPath(arrival), stream, shardID, firstSeq, ext)
}

// ErrorKey is the key of the errors/ object holding the rejected records of one flush of one
// shard in one hour partition (by arrival), named after the first of them:
//
//	errors/year=YYYY/month=MM/day=DD/hour=HH/<stream>-<shardId>-<firstSeq>.jsonl
//
// Like ObjectKey it is a pure function of the records' position in the stream, so a replay
// of the same flush rewrites it.
func ErrorKey(stream, shardID string, arrival time.Time, firstSeq string) string {
	return fmt.Sprintf("%s/%s/%s-%s-%s.jsonl", ErrorsPrefix, partitionPath(arrival), stream, shardID, firstSeq)
}

// ErrorRecord is one line of an errors/ object (JSON lines, one rejected record each, in
// sequence order).
type ErrorRecord struct {
	Reason         Reason    `json:"reason"`
	Field          string    `json:"field,omitempty"`
	Message        string    `json:"message"`
	Stream         string    `json:"stream"`
	ShardID        string    `json:"shard_id"`
	SequenceNumber string    `json:"sequence_number"`
	PartitionKey   string    `json:"partition_key"`
	ArrivalTime    time.Time `json:"arrival_time"`
	PayloadBase64  []byte    `json:"payload_base64"` // encoding/json writes []byte as base64
}

// encodeErrors serialises rejected records as JSON lines.
func encodeErrors(errs []ErrorRecord) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range errs {
		if err := enc.Encode(&errs[i]); err != nil {
			return nil, fmt.Errorf("encode errors object: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// DecodeErrorObject reads an errors/ object back into its records (tests, tools).
func DecodeErrorObject(b []byte) ([]ErrorRecord, error) {
	var out []ErrorRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var e ErrorRecord
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("decode errors object line %d: %w", len(out)+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}
