package worker

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"
)

// ErrorsPrefix is the key prefix of rejected events (like Firehose's processing-failed/).
const ErrorsPrefix = "errors"

// partitionPath is the Hive-style hour partition of t in UTC: year=YYYY/month=MM/day=DD/hour=HH.
func partitionPath(t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("year=%04d/month=%02d/day=%02d/hour=%02d", t.Year(), int(t.Month()), t.Day(), t.Hour())
}

// ObjectKey is the key of the output object holding the records of one flush of one shard in
// one hour partition (from ApproximateArrivalTimestamp, UTC), named after the first record the
// flush took in that hour, valid or rejected (sequence number seq, sub-sequence sub):
//
//	year=YYYY/month=MM/day=DD/hour=HH/<stream>-<shardId>-<seq>[-<sub>].<ext>
//
// The sub-sequence number is added only when it is not 0 (a flush starting inside a KPL
// aggregate, which the processor never cuts, so in practice never). The key is a pure
// function of the object's position in the stream, so a replay rewrites the same key instead
// of adding a duplicate.
func ObjectKey(stream, shardID string, arrival time.Time, seq string, sub int64, ext string) string {
	return fmt.Sprintf("%s/%s.%s", partitionPath(arrival), objectName(stream, shardID, seq, sub), ext)
}

func objectName(stream, shardID, seq string, sub int64) string {
	if sub != 0 {
		return fmt.Sprintf("%s-%s-%s-%d", stream, shardID, seq, sub)
	}
	return fmt.Sprintf("%s-%s-%s", stream, shardID, seq)
}

// objectPos is where an object starts in its shard: the sequence and sub-sequence numbers of
// the first record its flush took in its hour partition (what its key is named after).
type objectPos struct {
	seq string
	sub int64
}

// shardHourPrefixes are the key prefixes of one shard's output objects and errors/ objects in
// the hour partition of t: listing them finds every object the shard's flushes wrote in that
// hour. The trailing "-" keeps another shard whose id extends this one out.
func shardHourPrefixes(stream, shardID string, t time.Time) (output, errs string) {
	name := stream + "-" + shardID + "-"
	return partitionPath(t) + "/" + name, ErrorsPrefix + "/" + partitionPath(t) + "/" + name
}

// parseObjectPos reads an object's position from the rest of its key after one of
// shardHourPrefixes: "<seq>[-<sub>].<ext>". ok is false for a key that is not named so (an
// object some other tool put there).
func parseObjectPos(rest string) (pos objectPos, ok bool) {
	name, _, found := strings.Cut(rest, ".")
	if !found {
		return objectPos{}, false
	}
	seq, subText, hasSub := strings.Cut(name, "-")
	if !isDecimal(seq) {
		return objectPos{}, false
	}
	pos.seq = seq
	if hasSub {
		sub, err := strconv.ParseInt(subText, 10, 64)
		if err != nil || sub <= 0 || !isDecimal(subText) {
			return objectPos{}, false
		}
		pos.sub = sub
	}
	return pos, true
}

// isDecimal reports whether s is a non-empty string of ASCII digits (a sequence number).
func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ErrorKey is the key of the errors/ object holding the rejected records of the same flush and
// hour partition as ObjectKey, under the same name:
//
//	errors/year=YYYY/month=MM/day=DD/hour=HH/<stream>-<shardId>-<seq>[-<sub>].jsonl.gz
//
// The body is gzip-compressed JSON lines (what Firehose writes with GZIP compression; Athena
// and zcat read it as is): a bad producer's payloads compress several times, which keeps its
// shard as fast as a valid one.
func ErrorKey(stream, shardID string, arrival time.Time, seq string, sub int64) string {
	return fmt.Sprintf("%s/%s/%s%s", ErrorsPrefix, partitionPath(arrival), objectName(stream, shardID, seq, sub), ErrorsExt)
}

// ErrorsExt is the name extension of errors/ objects.
const ErrorsExt = ".jsonl.gz"

// ErrorRecord is one line of an errors/ object (JSON lines, one rejected record each, in
// sequence order).
type ErrorRecord struct {
	Reason         Reason `json:"reason"`
	Field          string `json:"field,omitempty"`
	Message        string `json:"message"`
	Stream         string `json:"stream"`
	ShardID        string `json:"shard_id"`
	SequenceNumber string `json:"sequence_number"`
	// SubSequenceNumber is the user record's index in its KPL aggregate (0 for a plain record).
	SubSequenceNumber int64     `json:"sub_sequence_number"`
	PartitionKey      string    `json:"partition_key"`
	ArrivalTime       time.Time `json:"arrival_time"`
	PayloadBase64     []byte    `json:"payload_base64"` // encoding/json writes []byte as base64
}

// encodeErrors serialises rejected records as JSON lines, the same JSON encoding/json writes
// for ErrorRecord (pinned by a round-trip test) without reflection: a producer that sends
// nothing but garbage makes this the hot path of its shard.
//
// The gzip stream has no name and no modification time, so the same records always give the
// same bytes.
func encodeErrors(errs []ErrorRecord) ([]byte, error) {
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("encode errors object: %w", err)
	}
	line := make([]byte, 0, 1024)
	for i := range errs {
		line = appendErrorRecord(line[:0], &errs[i])
		if _, err := zw.Write(line); err != nil {
			return nil, fmt.Errorf("encode errors object: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("encode errors object: %w", err)
	}
	return out.Bytes(), nil
}

func appendErrorRecord(b []byte, e *ErrorRecord) []byte {
	b = append(b, `{"reason":`...)
	b = appendJSONString(b, string(e.Reason))
	if e.Field != "" {
		b = append(b, `,"field":`...)
		b = appendJSONString(b, e.Field)
	}
	b = append(b, `,"message":`...)
	b = appendJSONString(b, e.Message)
	b = append(b, `,"stream":`...)
	b = appendJSONString(b, e.Stream)
	b = append(b, `,"shard_id":`...)
	b = appendJSONString(b, e.ShardID)
	b = append(b, `,"sequence_number":`...)
	b = appendJSONString(b, e.SequenceNumber)
	b = append(b, `,"sub_sequence_number":`...)
	b = strconv.AppendInt(b, e.SubSequenceNumber, 10)
	b = append(b, `,"partition_key":`...)
	b = appendJSONString(b, e.PartitionKey)
	b = append(b, `,"arrival_time":"`...)
	b = e.ArrivalTime.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","payload_base64":`...)
	if e.PayloadBase64 == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, e.PayloadBase64)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD (as encoding/json does).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// DecodeErrorObject reads an errors/ object (gzip-compressed JSON lines) back into its
// records (tests, tools).
func DecodeErrorObject(b []byte) ([]ErrorRecord, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("decode errors object: %w", err)
	}
	defer zr.Close()
	var out []ErrorRecord
	dec := json.NewDecoder(zr)
	for dec.More() {
		var e ErrorRecord
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("decode errors object line %d: %w", len(out)+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}
