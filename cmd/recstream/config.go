package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/recstream/recstream/batch"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/logging"
	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/worker"
)

// Config is config.yaml. Each section is owned by the package that uses it.
type Config struct {
	MySQL     mysqldb.Config        `yaml:"mysql"`
	Postgres  pg.Config             `yaml:"postgres"`
	Kinesis   awsenv.KinesisConfig  `yaml:"kinesis"`
	DynamoDB  awsenv.DynamoDBConfig `yaml:"dynamodb"`
	S3        awsenv.S3Config       `yaml:"s3"`
	Worker    worker.Config         `yaml:"worker"`
	Batch     batch.Config          `yaml:"batch"`
	Inference inference.Config      `yaml:"inference"`
	Log       logging.Config        `yaml:"log"`
	Metrics   MetricsConfig         `yaml:"metrics"`
}

// MetricsConfig is the `metrics` section: where the worker serves /metrics, /healthz, /readyz.
type MetricsConfig struct {
	Listen string `yaml:"listen"` // host:port; "" disables the HTTP endpoint
}

// Validate reports the first invalid field.
func (c MetricsConfig) Validate() error {
	if c.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: must be host:port, got %q", c.Listen)
	}
	return nil
}

// Validate checks rules that span sections.
func (c Config) Validate() error {
	if c.Kinesis.Region == "" || c.DynamoDB.Region == "" {
		return errors.New("region: kinesis.region and dynamodb.region must be set")
	}
	return nil
}

// DefaultConfig holds the values a key takes when config.yaml leaves it out. They equal the
// shipped config.yaml so that a minimal file works against the local stack.
func DefaultConfig() Config {
	return Config{
		MySQL:    mysqldb.DefaultConfig(),
		Postgres: pg.Config{DSN: "postgres://recstream@127.0.0.1:5432/recstream?sslmode=disable", Schema: "public", MaxConns: 8, MinConns: 1, EfSearch: 100, MaintenanceWorkMem: "256MB"},
		Kinesis:  awsenv.KinesisConfig{Stream: "recstream-user-activity", Shards: 4, Region: "us-east-1", Endpoint: "http://127.0.0.1:4567"},
		DynamoDB: awsenv.DynamoDBConfig{LeaseTable: "recstream-worker", Region: "us-east-1", Endpoint: "http://127.0.0.1:4568"},
		S3: awsenv.S3Config{Endpoint: "http://127.0.0.1:7070", Region: "us-east-1", PathStyle: true, Buckets: awsenv.Buckets{
			Datalake: "s3://recstream-datalake", Artifacts: "s3://recstream-artifacts", Recommendations: "s3://recstream-recommendations"}},
		Worker:    worker.DefaultConfig(),
		Batch:     batch.DefaultConfig(),
		Inference: inference.DefaultConfig(),
		Log:       logging.Config{Level: "info", Format: "auto"},
		Metrics:   MetricsConfig{Listen: "127.0.0.1:9108"},
	}
}
