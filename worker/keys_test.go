package worker

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestObjectKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		arrival time.Time
		sub     int64
		want    string
	}{
		{"utc", time.Date(2024, 3, 7, 9, 59, 59, 0, time.UTC), 0, "year=2024/month=03/day=07/hour=09/s-shardId-000000000001-49590.parquet"},
		{"other zone becomes utc", time.Date(2024, 3, 7, 1, 0, 0, 0, time.FixedZone("PST", -8*3600)), 0, "year=2024/month=03/day=07/hour=09/s-shardId-000000000001-49590.parquet"},
		{"new year", time.Date(2023, 12, 31, 23, 30, 0, 0, time.FixedZone("X", -3600)), 0, "year=2024/month=01/day=01/hour=00/s-shardId-000000000001-49590.parquet"},
		{"inside an aggregate", time.Date(2024, 3, 7, 9, 0, 0, 0, time.UTC), 7, "year=2024/month=03/day=07/hour=09/s-shardId-000000000001-49590-7.parquet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ObjectKey("s", "shardId-000000000001", tc.arrival, "49590", tc.sub, "parquet"); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	if got := ErrorKey("s", "shardId-1", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), "77", 0); got != "errors/year=2024/month=01/day=02/hour=03/s-shardId-1-77.jsonl.gz" {
		t.Fatalf("ErrorKey = %s", got)
	}
	if got := ErrorKey("s", "shardId-1", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), "77", 3); got != "errors/year=2024/month=01/day=02/hour=03/s-shardId-1-77-3.jsonl.gz" {
		t.Fatalf("ErrorKey = %s", got)
	}
}

func TestBufferLimitsAndWindow(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 10, 0, 0, 0, time.UTC)
	type add struct {
		seq  string
		size int
		at   time.Duration // arrival offset from t0
		bad  bool
	}
	for _, tc := range []struct {
		name      string
		limits    FlushConfig
		adds      []add
		full      bool
		windowEnd time.Duration // from t0
	}{
		{"count", FlushConfig{MaxRecords: 2, MaxBytes: 1 << 20, MaxAge: time.Minute}, []add{{"1", 10, 0, false}, {"2", 10, 0, true}}, true, time.Minute},
		{"under count", FlushConfig{MaxRecords: 3, MaxBytes: 1 << 20, MaxAge: time.Minute}, []add{{"1", 10, 0, false}, {"2", 10, 0, false}}, false, time.Minute},
		{"bytes", FlushConfig{MaxRecords: 100, MaxBytes: 1024, MaxAge: time.Minute}, []add{{"1", 1000, 0, false}, {"2", 24, 0, false}}, true, time.Minute},
		{"window of the first record", FlushConfig{MaxRecords: 100, MaxBytes: 1 << 20, MaxAge: 10 * time.Second}, []add{{"1", 1, 12 * time.Second, false}, {"2", 1, 25 * time.Second, false}}, false, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuffer(tc.limits)
			for _, a := range tc.adds {
				if a.bad {
					b.addError(ErrorRecord{SequenceNumber: a.seq, ArrivalTime: t0.Add(a.at)}, a.size)
				} else {
					b.addRecord(OutputRecord{SequenceNumber: a.seq, ArrivalTime: t0.Add(a.at)}, a.size)
				}
			}
			if b.full() != tc.full {
				t.Fatalf("full=%v, want %v", b.full(), tc.full)
			}
			if got := b.windowEnd(); !got.Equal(t0.Add(tc.windowEnd)) {
				t.Fatalf("window end %s, want %s", got, t0.Add(tc.windowEnd))
			}
			if b.first != tc.adds[0].seq || b.last != tc.adds[len(tc.adds)-1].seq {
				t.Fatalf("first/last = %s/%s", b.first, b.last)
			}
		})
	}
}

// TestBufferWindowsAligned: windows are aligned to the epoch, so two workers (or a replay)
// that start at different records cut at the same instants.
func TestBufferWindowsAligned(t *testing.T) {
	b := newBuffer(FlushConfig{MaxRecords: 100, MaxBytes: 1 << 20, MaxAge: 10 * time.Second})
	at := time.Date(2024, 1, 1, 10, 0, 9, 999_000_000, time.UTC)
	if b.windowOf(at) == b.windowOf(at.Add(time.Millisecond)) || b.windowOf(at) != b.windowOf(at.Add(-9*time.Second)) {
		t.Fatal("window boundaries are not at multiples of max_age")
	}
}

func TestBufferPartitions(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 10, 59, 59, 0, time.UTC)
	b := newBuffer(FlushConfig{MaxRecords: 100, MaxBytes: 1 << 20, MaxAge: time.Second})
	// A rejected record first: it names the hour's objects (output and errors/ alike).
	b.addError(ErrorRecord{SequenceNumber: "0", SubSequenceNumber: 0, ArrivalTime: t0}, 1)
	for i, at := range []time.Time{t0, t0, t0.Add(time.Second), t0.Add(2 * time.Second)} {
		b.addRecord(OutputRecord{SequenceNumber: string(rune('a' + i)), ArrivalTime: at}, 1)
	}
	parts := b.partitions()
	if len(parts) != 2 || len(parts[0].items) != 2 || len(parts[1].items) != 2 || parts[1].items[0].SequenceNumber != "c" || parts[1].hour.Hour() != 11 {
		t.Fatalf("partitions %+v", parts)
	}
	if h := b.head(parts[0].hour); h == nil || h.seq != "0" {
		t.Fatalf("hour 10 named after %+v, want the rejected record 0", h)
	}
	if h := b.head(parts[1].hour); h == nil || h.seq != "c" {
		t.Fatalf("hour 11 named after %+v, want c", h)
	}
	// After a reset the buffer reuses its slice: one hour gives one part with only the new records.
	b.reset()
	if parts := b.partitions(); len(parts) != 0 || len(b.heads) != 0 {
		t.Fatalf("empty buffer partitions %+v", parts)
	}
	for i := range 3 {
		b.addRecord(OutputRecord{SequenceNumber: string(rune('x' + i)), ArrivalTime: t0.Add(-time.Duration(i) * time.Minute)}, 1)
	}
	parts = b.partitions()
	if len(parts) != 1 || len(parts[0].items) != 3 || parts[0].items[0].SequenceNumber != "x" || parts[0].hour.Hour() != 10 {
		t.Fatalf("single-hour partitions %+v", parts)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		key  string
	}{
		{"default ok", func(*Config) {}, ""},
		{"position", func(c *Config) { c.InitialPosition = "AT_TIMESTAMP" }, "initial_position:"},
		{"max records", func(c *Config) { c.MaxRecords = 0 }, "max_records:"},
		{"idle", func(c *Config) { c.IdleTimeBetweenReads = 10 * time.Millisecond }, "idle_time_between_reads:"},
		{"margin", func(c *Config) { c.LeaseSafetyMargin = c.FailoverTime }, "lease_safety_margin:"},
		{"format", func(c *Config) { c.Format = "csv" }, "format:"},
		{"stealing off ok", func(c *Config) { c.LeaseStealingInterval = 0 }, ""},
		{"stealing too often", func(c *Config) { c.LeaseStealingInterval = 100 * time.Millisecond }, "lease_stealing_interval:"},
		{"event bytes", func(c *Config) { c.MaxEventBytes = 2 << 20 }, "max_event_bytes:"},
		{"recommend batch zero", func(c *Config) { c.RecommendBatch = 0 }, "recommend_batch:"},
		{"recommend batch past a page", func(c *Config) { c.RecommendBatch = 10001 }, "recommend_batch:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error()[:len(tc.key)] != tc.key {
				t.Fatalf("err %v, want prefix %q", err, tc.key)
			}
		})
	}
	if err := (FlushConfig{MaxRecords: 1, MaxBytes: 2048, MaxAge: 500 * time.Millisecond}).Validate(); err == nil || err.Error()[:8] != "max_age:" {
		t.Fatalf("flush max_age: %v", err)
	}
}

// FuzzErrorRecordRoundTrip: the hand-written errors/ encoder writes valid JSON lines that
// encoding/json reads back to the same records, for any strings and payload (invalid UTF-8
// becomes U+FFFD, as encoding/json itself would write it).
func FuzzErrorRecordRoundTrip(f *testing.F) {
	f.Add("bad_json", "browse_history[0].quantity", "unexpected end of JSON input", "k\"ey\\", []byte(`{"session_id": 1`))
	f.Add("invalid_field", "", "\x00\x1f\u2028<>&\xff", "\xe2\x82", []byte{0, 1, 2, 255})
	f.Add("recommend_failed", "city", "ERROR: NaN not allowed in vector (SQLSTATE 22000)", "", []byte(nil))
	f.Fuzz(func(t *testing.T, reason, field, msg, pk string, payload []byte) {
		in := []ErrorRecord{
			{Reason: Reason(reason), Field: field, Message: msg, Stream: "s", ShardID: "shardId-000000000001", SequenceNumber: "49",
				PartitionKey: pk, ArrivalTime: time.Date(2026, 11, 29, 23, 4, 5, 123456789, time.UTC), PayloadBase64: payload},
			{Reason: ReasonBadJSON, Message: "m", ArrivalTime: time.Unix(0, 0).UTC(), PayloadBase64: []byte{}},
		}
		b, err := encodeErrors(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeErrorObject(b)
		if err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		// What encoding/json makes of the same records is the reference.
		var want []ErrorRecord
		for _, e := range in {
			jb, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var w ErrorRecord
			if err := json.Unmarshal(jb, &w); err != nil {
				t.Fatal(err)
			}
			want = append(want, w)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v\nline %q", got, want, b)
		}
		b2, _ := encodeErrors(in)
		if !bytes.Equal(b, b2) {
			t.Fatal("encoding the same records twice gave different bytes")
		}
	})
}

// TestObjectPosFromKey: the replay finds where the live worker cut a shard's flushes by
// listing shardHourPrefixes and parsing the rest of each key; every key ObjectKey and ErrorKey
// write parses back to its position, and nothing else does.
func TestObjectPosFromKey(t *testing.T) {
	at := time.Date(2024, 3, 7, 9, 30, 0, 0, time.UTC)
	out, errs := shardHourPrefixes("my.stream", "shardId-000000000001", at)
	for _, tc := range []struct {
		name string
		key  string
		want objectPos
		ok   bool
	}{
		{"output", ObjectKey("my.stream", "shardId-000000000001", at, "4959", 0, "parquet"), objectPos{"4959", 0}, true},
		{"output jsonl", ObjectKey("my.stream", "shardId-000000000001", at, "4959", 0, "jsonl"), objectPos{"4959", 0}, true},
		{"inside an aggregate", ObjectKey("my.stream", "shardId-000000000001", at, "4959", 12, "parquet"), objectPos{"4959", 12}, true},
		{"errors", ErrorKey("my.stream", "shardId-000000000001", at, "4960", 0), objectPos{"4960", 0}, true},
		{"errors inside an aggregate", ErrorKey("my.stream", "shardId-000000000001", at, "4960", 3), objectPos{"4960", 3}, true},
		{"no extension", out + "4959", objectPos{}, false},
		{"not a sequence number", out + "x49.parquet", objectPos{}, false},
		{"bad sub-sequence", out + "4959-x.parquet", objectPos{}, false},
		{"zero sub-sequence is never written", out + "4959-0.parquet", objectPos{}, false},
		{"another shard with a longer id", out[:len(out)-1] + "0-4959.parquet", objectPos{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rest, found := strings.CutPrefix(tc.key, out)
			if !found {
				rest, found = strings.CutPrefix(tc.key, errs)
			}
			if !found {
				if tc.ok {
					t.Fatalf("%s is under neither %s nor %s", tc.key, out, errs)
				}
				return
			}
			got, ok := parseObjectPos(rest)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("parseObjectPos(%q) = %+v, %v; want %+v, %v", rest, got, ok, tc.want, tc.ok)
			}
		})
	}
}
