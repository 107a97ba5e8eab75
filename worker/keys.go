package worker

import (
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

// ErrorKey is the key of the errors/ object for one rejected record:
//
//	errors/year=YYYY/month=MM/day=DD/hour=HH/<stream>-<shardId>-<seq>.json
func ErrorKey(stream, shardID string, arrival time.Time, seq string) string {
	return fmt.Sprintf("%s/%s/%s-%s-%s.json", ErrorsPrefix, partitionPath(arrival), stream, shardID, seq)
}

// ErrorRecord is the body of an errors/ object.
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
