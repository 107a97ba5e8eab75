package icetable

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/apache/iceberg-go/table"
)

// Position is a place in a Kinesis shard: a record's sequence number and, inside a KPL
// aggregate, its sub-sequence number. The zero Position is "before the first record".
type Position struct {
	Seq string
	Sub int64
}

// IsZero reports whether p is before every record (no position recorded).
func (p Position) IsZero() bool { return p.Seq == "" }

func (p Position) String() string {
	if p.IsZero() {
		return "none"
	}
	return p.Seq + ":" + strconv.FormatInt(p.Sub, 10)
}

// Compare orders positions as the stream does: sequence numbers are unsigned decimal integers
// of up to 128 bits, so a shorter one (no leading zeros) is smaller; ties go to the
// sub-sequence number. The zero Position is before every other.
func (p Position) Compare(q Position) int {
	switch {
	case p.Seq == q.Seq:
	case len(p.Seq) != len(q.Seq):
		if len(p.Seq) < len(q.Seq) {
			return -1
		}
		return 1
	case p.Seq < q.Seq:
		return -1
	default:
		return 1
	}
	switch {
	case p.Sub < q.Sub:
		return -1
	case p.Sub > q.Sub:
		return 1
	}
	return 0
}

// ParsePosition reads a summary value written by Position.String.
func ParsePosition(s string) (Position, error) {
	seq, sub, ok := strings.Cut(s, ":")
	if !ok || seq == "" || strings.TrimLeft(seq, "0123456789") != "" || (len(seq) > 1 && seq[0] == '0') {
		return Position{}, fmt.Errorf("position %q: want <sequence>:<sub-sequence>", s)
	}
	n, err := strconv.ParseInt(sub, 10, 64)
	if err != nil || n < 0 {
		return Position{}, fmt.Errorf("position %q: bad sub-sequence number", s)
	}
	return Position{Seq: seq, Sub: n}, nil
}

// PositionKeyPrefix starts the snapshot-summary keys that carry shard positions, like the
// Iceberg Kafka Connect sink's offsets: every snapshot the worker commits says, for each shard
// whose records it adds, the position of the last of them.
const PositionKeyPrefix = "recstream.position."

// PositionKey is the summary key of one shard's position.
func PositionKey(stream, shardID string) string {
	return PositionKeyPrefix + stream + "/" + shardID
}

// ShardKey names a shard of a stream: the map key of Positions.
type ShardKey struct{ Stream, Shard string }

func parsePositionKey(k string) (ShardKey, bool) {
	rest, ok := strings.CutPrefix(k, PositionKeyPrefix)
	if !ok {
		return ShardKey{}, false
	}
	stream, shard, ok := strings.Cut(rest, "/")
	if !ok || stream == "" || shard == "" {
		return ShardKey{}, false
	}
	return ShardKey{stream, shard}, true
}

// Positions reads, for every shard, the last committed position: walking from the current
// snapshot to its ancestors, the first snapshot whose summary names the shard decides. A
// summary value that does not parse is an error (the table was written by something else
// under our keys: guessing could lose or duplicate records).
func Positions(meta table.Metadata) (map[ShardKey]Position, error) {
	out := map[ShardKey]Position{}
	seen := map[int64]bool{}
	for s := meta.CurrentSnapshot(); s != nil && !seen[s.SnapshotID]; {
		seen[s.SnapshotID] = true
		if s.Summary != nil {
			for k, v := range s.Summary.Properties {
				sk, ok := parsePositionKey(k)
				if !ok {
					continue
				}
				if _, done := out[sk]; done {
					continue
				}
				p, err := ParsePosition(v)
				if err != nil {
					return nil, fmt.Errorf("snapshot %d: %s: %w", s.SnapshotID, k, err)
				}
				out[sk] = p
			}
		}
		if s.ParentSnapshotID == nil {
			break
		}
		s = meta.SnapshotByID(*s.ParentSnapshotID)
	}
	return out, nil
}
