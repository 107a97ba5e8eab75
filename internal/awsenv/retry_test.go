package awsenv_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/faults"
	"github.com/recstream/recstream/internal/stacktest"
)

// clients returns a Kinesis and an S3 client as the worker builds them (no I/O).
func clients(t *testing.T, kinesisEndpoint, s3Endpoint string, opts ...awsenv.Option) (*kinesis.Client, *s3.Client) {
	t.Helper()
	stacktest.SetAWSEnv(t)
	ctx := context.Background()
	kc, err := awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: "x", Shards: 1, Region: "us-east-1", Endpoint: kinesisEndpoint}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := awsenv.S3(ctx, awsenv.S3Config{Endpoint: s3Endpoint, Region: "us-east-1", PathStyle: true}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return kc, sc
}

// TestThrottleRetryDelays: the Kinesis and S3 clients retry a throttling answer after at most
// ThrottleBaseDelay, doubling per retry (the SDK's default waits up to 1 s, then 2 s), keep the
// SDK's bounds for other retryable errors and its 3 attempts, and leave a caller's retryer alone.
func TestThrottleRetryDelays(t *testing.T) {
	kc, sc := clients(t, "http://127.0.0.1:4567", "http://127.0.0.1:7070")
	throttles := []error{
		&ktypes.ProvisionedThroughputExceededException{Message: aws.String("Rate exceeded for shard")},
		&smithy.GenericAPIError{Code: "SlowDown", Message: "Please reduce your request rate."},
	}
	internal := &smithy.GenericAPIError{Code: "InternalFailure"}
	for name, r := range map[string]aws.Retryer{"kinesis": kc.Options().Retryer, "s3": sc.Options().Retryer} {
		if got := r.MaxAttempts(); got != 3 {
			t.Errorf("%s: %d attempts, want the SDK's 3", name, got)
		}
		for _, err := range throttles {
			if !r.IsErrorRetryable(err) {
				t.Errorf("%s: %v not retryable", name, err)
			}
			for attempt, bound := range map[int]time.Duration{1: awsenv.ThrottleBaseDelay, 2: 2 * awsenv.ThrottleBaseDelay} {
				var longest time.Duration
				for range 500 {
					d, derr := r.RetryDelay(attempt, err)
					if derr != nil {
						t.Fatal(derr)
					}
					longest = max(longest, d)
				}
				// Full jitter: 500 draws come within a tenth of the bound, never above it.
				if longest > bound || longest < bound*9/10 {
					t.Errorf("%s: retry %d after %v: longest pause of 500 %v, want within (%v, %v]", name, attempt, err, longest, bound*9/10, bound)
				}
			}
		}
		for range 500 {
			if d, _ := r.RetryDelay(1, internal); d > 50*time.Millisecond {
				t.Fatalf("%s: first retry of a 500 after %v, want the SDK's <= 50ms", name, d)
			}
		}
	}

	kc, sc = clients(t, "http://127.0.0.1:4567", "http://127.0.0.1:7070",
		func(c *aws.Config) { c.Retryer = func() aws.Retryer { return aws.NopRetryer{} } })
	if _, ok := kc.Options().Retryer.(aws.NopRetryer); !ok {
		t.Errorf("kinesis: the caller's retryer was replaced by %T", kc.Options().Retryer)
	}
	if _, ok := sc.Options().Retryer.(aws.NopRetryer); !ok {
		t.Errorf("s3: the caller's retryer was replaced by %T", sc.Options().Retryer)
	}
}

// delays records every retry pause the SDK asks its retryer for.
type delays struct {
	mu sync.Mutex
	d  []time.Duration
}

func (r *delays) option(c *aws.Config) {
	inner := c.Retryer
	if inner == nil { // what the client would build for itself
		inner = func() aws.Retryer { return retry.NewStandard() }
	}
	c.Retryer = func() aws.Retryer { return recording{inner(), r} }
}

type recording struct {
	aws.Retryer
	r *delays
}

func (x recording) RetryDelay(attempt int, err error) (time.Duration, error) {
	d, derr := x.Retryer.RetryDelay(attempt, err)
	x.r.mu.Lock()
	x.r.d = append(x.r.d, d)
	x.r.mu.Unlock()
	return d, derr
}

// TestThrottledCallsRetriedSoon over kinesalite and the S3 gateway behind the fault proxy: a
// GetRecords throttled twice and a PutObject answered SlowDown twice succeed on their third
// attempt, after pauses within ThrottleBaseDelay and twice that.
func TestThrottledCallsRetriedSoon(t *testing.T) {
	ctx := context.Background()
	kp, err := faults.NewHTTP(faults.Kinesis, stacktest.Endpoint(t, "kinesis"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	sp, err := faults.NewHTTP(faults.S3, stacktest.Endpoint(t, "s3"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var rec delays
	kc, sc := clients(t, kp.URL(), sp.URL(), rec.option)
	direct, _ := clients(t, stacktest.Endpoint(t, "kinesis"), stacktest.Endpoint(t, "s3"))

	stream := stacktest.UniqueName("awsenv-retry-")
	stacktest.CreateStream(t, direct, stream, 1)
	t.Cleanup(func() {
		_, _ = direct.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	})
	shards, err := awsenv.ListShards(ctx, direct, stream)
	if err != nil {
		t.Fatal(err)
	}
	it, err := direct.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: shards[0].ShardId,
		ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	kp.Next(faults.Throughput, "GetRecords")
	kp.Next(faults.Throughput, "GetRecords")
	if _, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator}); err != nil {
		t.Fatalf("GetRecords throttled twice: %v, want success on the third attempt", err)
	}

	bucket := strings.TrimPrefix(stacktest.Value(t, "s3.buckets.recommendations"), "s3://")
	key := stream + "/obj"
	sp.Next(faults.SlowDown, "")
	sp.Next(faults.SlowDown, "")
	if _, err := sc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader([]byte("x"))}); err != nil {
		t.Fatalf("PutObject answered SlowDown twice: %v, want success on the third attempt", err)
	}
	t.Cleanup(func() {
		_, _ = sc.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	})

	kf, _ := kp.Counts()
	sf, _ := sp.Counts()
	if kf[faults.Throughput] != 2 || sf[faults.SlowDown] != 2 {
		t.Fatalf("faults met: kinesis %v, s3 %v; want 2 each", kf, sf)
	}
	if len(rec.d) != 4 {
		t.Fatalf("%d retry pauses %v, want 4", len(rec.d), rec.d)
	}
	for i, d := range rec.d {
		if bound := awsenv.ThrottleBaseDelay << (i % 2); d > bound {
			t.Errorf("pause %d: %v, want <= %v", i, d, bound)
		}
	}
}
