package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/awsenv"
)

// TestEntryPointsValidateEveryConfigSection pins a hole: New and Replay validated only the
// worker section's own fields, not flush and retry, so a Config built in code with
// flush.max_age 0 reached windowOf (division by zero) and retry.initial_backoff 0 made the
// retry loop spin. Every entry point now rejects it, naming the key path as the config file
// loader does.
func TestEntryPointsValidateEveryConfigSection(t *testing.T) {
	stream := Stream{Kinesis: awsenv.DefaultKinesisConfig(), DynamoDB: awsenv.DefaultDynamoDBConfig()}
	for _, tc := range []struct {
		name    string
		mod     func(*Config, *Stream)
		wantErr string // prefix; "" = the config is valid
	}{
		{"defaults are valid", func(*Config, *Stream) {}, ""},
		{"flush.max_age zero", func(c *Config, _ *Stream) { c.Flush.MaxAge = 0 }, "worker.flush.max_age: must be >= 1s"},
		{"flush.max_age not dividing an hour", func(c *Config, _ *Stream) { c.Flush.MaxAge = 7 * time.Second }, "worker.flush.max_age: must be >= 1s and divide an hour"},
		{"flush.max_records zero", func(c *Config, _ *Stream) { c.Flush.MaxRecords = 0 }, "worker.flush.max_records: must be >= 1"},
		{"flush.max_bytes too small", func(c *Config, _ *Stream) { c.Flush.MaxBytes = 10 }, "worker.flush.max_bytes: must be >= 1024"},
		{"flush.window_grace negative", func(c *Config, _ *Stream) { c.Flush.WindowGrace = -time.Second }, "worker.flush.window_grace: must be between 0 and 1m"},
		{"retry.initial_backoff zero", func(c *Config, _ *Stream) { c.Retry.InitialBackoff = 0 }, "worker.retry.initial_backoff: must be > 0"},
		{"retry.max_backoff below initial", func(c *Config, _ *Stream) { c.Retry.MaxBackoff = c.Retry.InitialBackoff / 2 }, "worker.retry.max_backoff: must be >= initial_backoff"},
		{"worker key", func(c *Config, _ *Stream) { c.Format = "csv" }, `worker.format: must be parquet or jsonl, got "csv"`},
		{"kinesis key", func(_ *Config, s *Stream) { s.Kinesis.Stream = "" }, "kinesis.stream: must not be empty"},
		{"dynamodb key", func(_ *Config, s *Stream) { s.DynamoDB.LeaseTable = "" }, "dynamodb.lease_table: must not be empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, st := DefaultConfig(), stream
			tc.mod(&cfg, &st)
			deps := Deps{Recommender: fakeRecommender{}, K: 5}
			// A valid config gets past validation to New's next check, the nil Kinesis client,
			// and to Replay's, the request (neither does I/O before).
			wantNew, wantReplay := "worker: nil kinesis client", "replay: want --from"
			if tc.wantErr != "" {
				wantNew, wantReplay = tc.wantErr, "replay: "+tc.wantErr
			}
			if _, err := New(cfg, st, deps, nil, nil); err == nil || !strings.HasPrefix(err.Error(), wantNew) {
				t.Fatalf("New: error %v, want it to start with %q", err, wantNew)
			}
			if tc.wantErr != "" && !strings.HasPrefix(tc.wantErr, "worker.") {
				return // Replay takes no stream sections
			}
			_, err := Replay(context.Background(), cfg, st.Kinesis.Stream, deps, nil, nil, ReplayRequest{})
			if err == nil || !strings.HasPrefix(err.Error(), wantReplay) {
				t.Fatalf("Replay: error %v, want it to start with %q", err, wantReplay)
			}
		})
	}
}
