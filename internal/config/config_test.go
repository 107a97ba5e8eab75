package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type flush struct {
	MaxAge     time.Duration `yaml:"max_age"`
	MaxRecords int           `yaml:"max_records"`
}

func (f flush) Validate() error {
	if f.MaxAge <= 0 {
		return fmt.Errorf("max_age: must be > 0, got %s", f.MaxAge)
	}
	return nil
}

type workerSec struct {
	Format string `yaml:"format"`
	Flush  flush  `yaml:"flush"`
	Debug  bool   `yaml:"debug"`
}

func (w workerSec) Validate() error {
	if w.Format != "parquet" && w.Format != "jsonl" {
		return errors.New("format: must be parquet or jsonl")
	}
	return nil
}

type db struct {
	DSN      string `yaml:"dsn"`
	Password string `yaml:"password" secret:"true"`
}

type root struct {
	Worker workerSec `yaml:"worker"`
	DB     db        `yaml:"db"`
	Rate   float64   `yaml:"rate"`
}

func defaults() root {
	return root{Worker: workerSec{Format: "parquet", Flush: flush{MaxAge: time.Second, MaxRecords: 10}}, DB: db{DSN: "x"}}
}

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		env     []string
		wantErr string // substring; "" = success
		check   func(t *testing.T, r root)
	}{
		{name: "empty file keeps defaults", yaml: "", check: func(t *testing.T, r root) {
			if r.Worker.Flush.MaxAge != time.Second || r.Worker.Format != "parquet" {
				t.Fatalf("defaults lost: %+v", r)
			}
		}},
		{name: "values decode", yaml: "worker:\n  format: jsonl\n  flush:\n    max_age: 250ms\n    max_records: 7\nrate: 0.5\n", check: func(t *testing.T, r root) {
			if r.Worker.Format != "jsonl" || r.Worker.Flush.MaxAge != 250*time.Millisecond || r.Worker.Flush.MaxRecords != 7 || r.Rate != 0.5 {
				t.Fatalf("got %+v", r)
			}
		}},
		{name: "section left empty keeps defaults", yaml: "worker:\n", check: func(t *testing.T, r root) {
			if r.Worker.Format != "parquet" {
				t.Fatalf("got %+v", r)
			}
		}},
		{name: "unknown top-level key", yaml: "wroker:\n  format: jsonl\n", wantErr: "wroker: unknown key (line 1)"},
		{name: "unknown nested key", yaml: "worker:\n  flush:\n    max_agee: 1s\n", wantErr: "worker.flush.max_agee: unknown key (line 3); known keys: max_age, max_records"},
		{name: "bad duration", yaml: "worker:\n  flush:\n    max_age: soon\n", wantErr: `worker.flush.max_age: invalid value "soon" (line 3): want a duration`},
		{name: "bad int", yaml: "worker:\n  flush:\n    max_records: many\n", wantErr: `worker.flush.max_records: invalid value "many" (line 3): want an integer`},
		{name: "bad bool", yaml: "worker:\n  debug: maybe\n", wantErr: `worker.debug: invalid value "maybe" (line 2): want true or false`},
		{name: "list where scalar expected", yaml: "rate: [1, 2]\n", wantErr: `rate: invalid value "<sequence>" (line 1): want a number`},
		{name: "scalar where section expected", yaml: "worker: 3\n", wantErr: `worker: must be a mapping, got "3"`},
		{name: "duplicate key", yaml: "rate: 1\nrate: 2\n", wantErr: "rate: duplicate key (line 2)"},
		{name: "validate names nested key", yaml: "worker:\n  flush:\n    max_age: 0s\n", wantErr: "worker.flush.max_age: must be > 0, got 0s"},
		{name: "validate names section key", yaml: "worker:\n  format: csv\n", wantErr: "worker.format: must be parquet or jsonl"},
		{name: "secret in file refused", yaml: "db:\n  password: hunter2\n", wantErr: "db.password: secrets are not read from the config file; set RECSTREAM_DB_PASSWORD"},
		{name: "malformed yaml", yaml: "worker: [\n", wantErr: "parse config"},
		{name: "env overrides file", yaml: "worker:\n  format: jsonl\n", env: []string{"RECSTREAM_WORKER_FORMAT=parquet", "RECSTREAM_WORKER_FLUSH_MAX_AGE=3s", "RECSTREAM_DB_PASSWORD=s3cr:et #x"}, check: func(t *testing.T, r root) {
			if r.Worker.Format != "parquet" || r.Worker.Flush.MaxAge != 3*time.Second || r.DB.Password != "s3cr:et #x" {
				t.Fatalf("got %+v", r)
			}
		}},
		{name: "bad env value names key and variable", env: []string{"RECSTREAM_WORKER_FLUSH_MAX_RECORDS=lots"}, wantErr: `worker.flush.max_records: invalid value "lots" from RECSTREAM_WORKER_FLUSH_MAX_RECORDS: want an integer`},
		{name: "env value is validated", env: []string{"RECSTREAM_WORKER_FLUSH_MAX_AGE=0s"}, wantErr: "worker.flush.max_age: must be > 0"},
		{name: "unrelated env ignored", env: []string{"PATH=/bin", "RECSTREAMX=1", "recstream_worker_flush_maxage=1s"}},
		// An unknown RECSTREAM_* variable was silently ignored: a typo in a task definition
		// left the default in force. It is an error naming the variable, like an unknown key.
		{name: "unknown env is an error", env: []string{"RECSTREAM_NOT_A_KEY=1"}, wantErr: "unknown environment variable RECSTREAM_NOT_A_KEY: no config key has that name"},
		{name: "env typo names the key meant", env: []string{"RECSTREAM_WORKER_FLUSH_MAXAGE=3s"},
			wantErr: "unknown environment variable RECSTREAM_WORKER_FLUSH_MAXAGE: no config key has that name; did you mean RECSTREAM_WORKER_FLUSH_MAX_AGE (worker.flush.max_age)?"},
		{name: "env naming a section is unknown", env: []string{"RECSTREAM_WORKER_FLUSH=3s"}, wantErr: "unknown environment variable RECSTREAM_WORKER_FLUSH:"},
		{name: "every unknown env is named", env: []string{"RECSTREAM_ZZZ_TOP=1", "RECSTREAM_AAA=1", "RECSTREAM_WORKER_FORMAT=jsonl"},
			wantErr: "unknown environment variable RECSTREAM_AAA: no config key has that name; unknown environment variable RECSTREAM_ZZZ_TOP:"},
		{name: "unknown env value is never shown", env: []string{"RECSTREAM_DB_PASSWROD=hunter2"}, wantErr: "did you mean RECSTREAM_DB_PASSWORD (db.password)?"},
		{name: "non-config variables allowed", env: []string{"RECSTREAM_AWS_OPLOG=/tmp/ops.log", "RECSTREAM_LEASE_BENCH=1", "RECSTREAM_STACK_DIR=/x", "RECSTREAM_WORKER_BENCH=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := defaults()
			err := Load(strings.NewReader(tc.yaml), &r, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error %v shows a value", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestSecretNeverInError(t *testing.T) {
	type sec struct {
		Password int `yaml:"password" secret:"true"`
	}
	type r struct {
		S sec `yaml:"s"`
	}
	var v r
	err := Load(strings.NewReader(""), &v, []string{"RECSTREAM_S_PASSWORD=topsecret"})
	if err == nil || strings.Contains(err.Error(), "topsecret") || !strings.Contains(err.Error(), "<redacted>") {
		t.Fatalf("error = %v: want a redacted value", err)
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"postgres.dsn":         "RECSTREAM_POSTGRES_DSN",
		"worker.flush.max_age": "RECSTREAM_WORKER_FLUSH_MAX_AGE",
		"s3.buckets.artifacts": "RECSTREAM_S3_BUCKETS_ARTIFACTS",
		"kinesis.endpoint":     "RECSTREAM_KINESIS_ENDPOINT",
		"metrics.listen":       "RECSTREAM_METRICS_LISTEN",
		"inference.train.seed": "RECSTREAM_INFERENCE_TRAIN_SEED",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
