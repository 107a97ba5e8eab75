package worker

import (
	"errors"
	"fmt"

	"github.com/aws/smithy-go"
)

// Every failure on the processing path is one of three kinds, and each has one answer:
//
//   - transient (PostgreSQL or S3 unreachable, timeouts, throttling, 5xx, serialization
//     conflicts, anything not classified below): retry with capped backoff; the shard waits,
//     and a wait longer than worker.stall_after shows as a stalled shard. A Recommender call
//     for several events that runs past worker.recommend_timeout is split in halves rather
//     than retried whole (its latency grows with its users); one event's is retried.
//   - deterministic (the records of the call themselves cannot be processed): the Recommender
//     says so by wrapping ErrDeterministic. The processor finds the failing records by
//     bisecting the batch, confirms each with a neutral probe that exercises the same lookups
//     (user and similar items) with inputs of no record (so that a recommender, or one of its
//     lookups, that rejects everything is not mistaken for bad records), writes them to
//     errors/ as recommend_failed with the error text, and writes the rest.
//   - permanent for the environment (S3 AccessDenied, NoSuchBucket, …): retrying does not help
//     until an operator acts, but no record is at fault, so the batch is kept and retried
//     while the error is logged at error level naming the bucket and the action, counted, and
//     reported by Worker.Health (readiness).

// ErrDeterministic marks a Recommender error caused by the input of the call (for example a
// value PostgreSQL rejects for that record's data): the same input fails again, so retrying
// the batch cannot help. Wrap it: fmt.Errorf("%w: %w", worker.ErrDeterministic, err).
var ErrDeterministic = errors.New("input cannot be processed")

// op names one kind of retried operation; it decides the retry policy and labels metrics.
type op int

const (
	opRecommend  op = iota // enrich a batch: writes nothing, so it is not fenced
	opPut                  // upload an object: fenced by the lease
	opCheckpoint           // write the checkpoint: fenced by the lease
	opCommit               // commit data files to the Iceberg table: fenced by the lease
	opTableRead            // read the table's position of a shard: writes nothing
)

func (o op) String() string {
	switch o {
	case opRecommend:
		return "recommend"
	case opPut:
		return "put"
	case opCheckpoint:
		return "checkpoint"
	case opCommit:
		return "commit"
	case opTableRead:
		return "table_read"
	}
	return fmt.Sprintf("op(%d)", int(o))
}

// fenced reports whether the op writes, and so may start only while the lease is safely held.
func (o op) fenced() bool { return o != opRecommend && o != opTableRead }

// permanentStorageCodes are S3 error codes that no retry can fix: the bucket or the task's
// permissions must change first.
var permanentStorageCodes = map[string]bool{
	"AccessDenied":          true,
	"AllAccessDisabled":     true,
	"InvalidAccessKeyId":    true,
	"InvalidBucketName":     true,
	"NoSuchBucket":          true,
	"SignatureDoesNotMatch": true,
	"AccountProblem":        true,
	"InvalidObjectState":    true,
}

// permanentStorageCode returns the S3 error code of err when it is a permanent one.
func permanentStorageCode(err error) (string, bool) {
	var ae smithy.APIError
	if errors.As(err, &ae) && permanentStorageCodes[ae.ErrorCode()] {
		return ae.ErrorCode(), true
	}
	return "", false
}
