package batch

import (
	"strings"
	"testing"
	"time"
)

func TestConfigSplitsIntoTheJobs(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c = Config{Seed: 7, LockTimeout: time.Second, InsertBatchRows: 11, RowGroupRows: 12, UploadConcurrency: 13, OrphanGrace: time.Minute}
	if s := c.SeedConfig(); s.InsertBatchRows != 11 {
		t.Errorf("seed config %+v", s)
	}
	if e := c.ETLConfig(); e.LockTimeout != time.Second || e.RowGroupRows != 12 || e.UploadConcurrency != 13 || e.OrphanGrace != time.Minute {
		t.Errorf("etl config %+v", e)
	}
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.LockTimeout = -1 }, "lock_timeout: must be >= 0"},
		{func(c *Config) { c.InsertBatchRows = 0 }, "insert_batch_rows: must be between 1 and 100000, got 0"},
		{func(c *Config) { c.RowGroupRows = 0 }, "row_group_rows: must be >= 1"},
		{func(c *Config) { c.UploadConcurrency = 257 }, "upload_concurrency: must be between 1 and 256"},
		{func(c *Config) { c.OrphanGrace = -time.Second }, "orphan_grace: must be >= 0"},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
