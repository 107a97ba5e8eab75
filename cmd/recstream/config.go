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

// DefaultConfig holds the values a key takes when config.yaml leaves it out: each section's
// own DefaultConfig, which equals the shipped config.yaml, so a minimal file works against the
// local stack.
func DefaultConfig() Config {
	return Config{
		MySQL:     mysqldb.DefaultConfig(),
		Postgres:  pg.DefaultConfig(),
		Kinesis:   awsenv.DefaultKinesisConfig(),
		DynamoDB:  awsenv.DefaultDynamoDBConfig(),
		S3:        awsenv.DefaultS3Config(),
		Worker:    worker.DefaultConfig(),
		Batch:     batch.DefaultConfig(),
		Inference: inference.DefaultConfig(),
		Log:       logging.DefaultConfig(),
		Metrics:   MetricsConfig{Listen: "127.0.0.1:9108"},
	}
}
