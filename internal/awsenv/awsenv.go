// Package awsenv builds aws-sdk-go-v2 clients for Kinesis, DynamoDB and S3 from recstream's
// config sections. Credentials always come from the standard AWS chain (environment, shared
// files, ECS task role); config only carries endpoints and regions, never secrets.
package awsenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// KinesisConfig is the `kinesis` config section.
type KinesisConfig struct {
	Stream   string `yaml:"stream"`   // stream name (always sent as StreamName: kinesalite refuses StreamARN)
	Shards   int    `yaml:"shards"`   // shard count the local stack creates the stream with
	Region   string `yaml:"region"`   // AWS region
	Endpoint string `yaml:"endpoint"` // "" for AWS; http://127.0.0.1:4567 for kinesalite
}

// DefaultKinesisConfig is the kinesis section of the shipped config.yaml: the local stack.
func DefaultKinesisConfig() KinesisConfig {
	return KinesisConfig{Stream: "recstream-user-activity", Shards: 4, Region: "us-east-1", Endpoint: "http://127.0.0.1:4567"}
}

// Validate reports the first invalid field.
func (c KinesisConfig) Validate() error {
	if c.Stream == "" {
		return errors.New("stream: must not be empty")
	}
	if c.Shards < 1 {
		return fmt.Errorf("shards: must be >= 1, got %d", c.Shards)
	}
	if c.Region == "" {
		return errors.New("region: must not be empty")
	}
	return validEndpoint(c.Endpoint)
}

// DynamoDBConfig is the `dynamodb` config section.
type DynamoDBConfig struct {
	LeaseTable string `yaml:"lease_table"` // KCL lease + checkpoint table (also the KCL application name)
	Region     string `yaml:"region"`
	Endpoint   string `yaml:"endpoint"`
}

// DefaultDynamoDBConfig is the dynamodb section of the shipped config.yaml: the local stack.
func DefaultDynamoDBConfig() DynamoDBConfig {
	return DynamoDBConfig{LeaseTable: "recstream-worker", Region: "us-east-1", Endpoint: "http://127.0.0.1:4568"}
}

// Validate reports the first invalid field.
func (c DynamoDBConfig) Validate() error {
	if c.LeaseTable == "" {
		return errors.New("lease_table: must not be empty")
	}
	if c.Region == "" {
		return errors.New("region: must not be empty")
	}
	return validEndpoint(c.Endpoint)
}

// Buckets names the three buckets recstream uses.
type Buckets struct {
	Datalake        string `yaml:"datalake"`        // location of ratings_ml_training/ (s3://bucket[/prefix] or file:///dir)
	Artifacts       string `yaml:"artifacts"`       // model artifacts: embeddings/, model/, scalers/
	Recommendations string `yaml:"recommendations"` // worker output
}

// S3Config is the `s3` config section.
type S3Config struct {
	Endpoint  string  `yaml:"endpoint"`   // "" for AWS S3
	Region    string  `yaml:"region"`     // AWS region
	PathStyle bool    `yaml:"path_style"` // path-style addressing (needed by most gateways)
	Buckets   Buckets `yaml:"buckets"`
}

// DefaultS3Config is the s3 section of the shipped config.yaml: the local stack's gateway and
// buckets.
func DefaultS3Config() S3Config {
	return S3Config{Endpoint: "http://127.0.0.1:7070", Region: "us-east-1", PathStyle: true, Buckets: Buckets{
		Datalake: "s3://recstream-datalake", Artifacts: "s3://recstream-artifacts", Recommendations: "s3://recstream-recommendations"}}
}

// Validate reports the first invalid field.
func (c S3Config) Validate() error {
	if c.Region == "" {
		return errors.New("region: must not be empty")
	}
	if err := validEndpoint(c.Endpoint); err != nil {
		return err
	}
	for name, v := range map[string]string{"buckets.datalake": c.Buckets.Datalake, "buckets.artifacts": c.Buckets.Artifacts, "buckets.recommendations": c.Buckets.Recommendations} {
		u, err := url.Parse(v)
		if v == "" || err != nil || (u.Scheme != "s3" && u.Scheme != "file") {
			return fmt.Errorf("%s: must be an s3://bucket[/prefix] or file:///dir URL, got %q", name, v)
		}
	}
	return nil
}

func validEndpoint(e string) error {
	if e == "" {
		return nil
	}
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint: must be an http(s) URL or empty, got %q", e)
	}
	return nil
}

// Option changes the loaded aws.Config (e.g. to add an API-recording middleware in tests).
type Option func(*aws.Config)

// load reads the default credential chain. It does no network I/O except on ECS/EC2 where the
// chain resolves credentials lazily on first use.
func load(ctx context.Context, region string, opts []Option) (aws.Config, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS config: %w", err)
	}
	for _, o := range append(envOptions(), opts...) {
		o(&cfg)
	}
	return cfg, nil
}

// Kinesis returns a Kinesis client for c. It retries throttling answers after shorter pauses
// than the SDK's default (see ThrottleBaseDelay).
func Kinesis(ctx context.Context, c KinesisConfig, opts ...Option) (*kinesis.Client, error) {
	cfg, err := load(ctx, c.Region, append([]Option{throttleRetry}, opts...))
	if err != nil {
		return nil, err
	}
	return kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
	}), nil
}

// DynamoDB returns a DynamoDB client for c.
func DynamoDB(ctx context.Context, c DynamoDBConfig, opts ...Option) (*dynamodb.Client, error) {
	cfg, err := load(ctx, c.Region, opts)
	if err != nil {
		return nil, err
	}
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
	}), nil
}

// S3 returns an S3 client for c. It retries SlowDown after shorter pauses than the SDK's
// default (see ThrottleBaseDelay).
func S3(ctx context.Context, c S3Config, opts ...Option) (*s3.Client, error) {
	cfg, err := load(ctx, c.Region, append([]Option{throttleRetry}, opts...))
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
		// Gateways that predate S3's default integrity checksums reject or mishandle them;
		// only send them when the operation requires one.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

// DefaultTimeout bounds one control-plane call in CLI commands.
const DefaultTimeout = 30 * time.Second

// ShardLister is the one Kinesis call ListShards needs.
type ShardLister interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
}

// ListShards returns every shard of stream, open and closed, following NextToken. (The SDK's
// paginator cannot be used: with NextToken the request must not name the stream, and
// kinesalite refuses a stream ARN.)
func ListShards(ctx context.Context, kc ShardLister, stream string) ([]ktypes.Shard, error) {
	var shards []ktypes.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(stream)}
	for {
		page, err := kc.ListShards(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list shards of %s: %w", stream, err)
		}
		shards = append(shards, page.Shards...)
		if page.NextToken == nil {
			return shards, nil
		}
		in = &kinesis.ListShardsInput{NextToken: page.NextToken}
	}
}
