package faults

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

func newOpProxy(t *testing.T, s Service, seed uint64) *OpProxy {
	t.Helper()
	p, err := NewOpHTTP(s, stacktest.Endpoint(t, string(s)), seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// noRetry makes each SDK call one request, so it meets one draw.
func noRetry(c *aws.Config) { c.Retryer = func() aws.Retryer { return aws.NopRetryer{} } }

// TestOpProxyFaultsOnlyTheNamedOperation over the real emulators: with every GetRecords
// throttled and every PutObject answered SlowDown, the other calls of the same clients (stream
// set-up, iterators, reads, lists, heads) reach the service and get its answers.
func TestOpProxyFaultsOnlyTheNamedOperation(t *testing.T) {
	ctx := context.Background()
	stacktest.SetAWSEnv(t)
	kp := newOpProxy(t, Kinesis, 1)
	sp := newOpProxy(t, S3, 1)
	if err := kp.SetRate("GetRecords", Throughput, 1); err != nil {
		t.Fatal(err)
	}
	if err := sp.SetRate("PutObject", SlowDown, 1); err != nil {
		t.Fatal(err)
	}
	kc, err := awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: "x", Shards: 1, Region: "us-east-1", Endpoint: kp.URL()}, noRetry)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := awsenv.S3(ctx, awsenv.S3Config{Endpoint: sp.URL(), Region: "us-east-1", PathStyle: true}, noRetry)
	if err != nil {
		t.Fatal(err)
	}

	stream := stacktest.UniqueName("faults-ops-")
	stacktest.CreateStream(t, kc, stream, 1) // CreateStream, DescribeStream through the proxy
	t.Cleanup(func() {
		_, _ = kc.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	})
	shards, err := awsenv.ListShards(ctx, kc, stream)
	if err != nil || len(shards) != 1 {
		t.Fatalf("ListShards through the proxy: %v %v", shards, err)
	}
	it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: shards[0].ShardId,
		ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatalf("GetShardIterator through the proxy: %v", err)
	}
	var pe *ktypes.ProvisionedThroughputExceededException
	for range 3 {
		if _, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator}); !errors.As(err, &pe) {
			t.Fatalf("GetRecords: %v, want ProvisionedThroughputExceededException", err)
		}
	}

	bucket := strings.TrimPrefix(stacktest.Value(t, "s3.buckets.recommendations"), "s3://")
	key := stacktest.UniqueName("faults-ops-") + "/obj"
	if _, err := sc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader([]byte("x"))}); apiCode(err) != "SlowDown" || status(err) != 503 {
		t.Fatalf("PutObject: %v, want 503 SlowDown", err)
	}
	if _, err := sc.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("HeadBucket through the proxy: %v", err)
	}
	if _, err := sc.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(key)}); err != nil {
		t.Fatalf("ListObjectsV2 through the proxy: %v", err)
	}
	if _, err := sc.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); apiCode(err) != "NoSuchKey" {
		t.Fatalf("GetObject: %v, want the gateway's own NoSuchKey (the PutObject never reached it)", err)
	}

	// Off again: the same calls succeed.
	if err := kp.SetRate("GetRecords", Throughput, 0); err != nil {
		t.Fatal(err)
	}
	if err := sp.SetRate("PutObject", SlowDown, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator}); err != nil {
		t.Fatalf("GetRecords with the rate off: %v", err)
	}
	if _, err := sc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader([]byte("x"))}); err != nil {
		t.Fatalf("PutObject with the rate off: %v", err)
	}
	t.Cleanup(func() {
		_, _ = sc.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	})

	kf, kr := kp.Counts()
	if kf[OpFault{"GetRecords", Throughput}] != 3 || len(kf) != 1 || kr["GetRecords"] != 4 || kr["GetShardIterator"] != 1 || kr["ListShards"] != 1 {
		t.Errorf("kinesis faults %v, requests %v", kf, kr)
	}
	sf, sr := sp.Counts()
	if sf[OpFault{"PutObject", SlowDown}] != 1 || len(sf) != 1 || sr["PutObject"] != 2 || sr["GetObject"] != 1 || sr["ListObjectsV2"] != 1 || sr["HeadBucket"] != 1 {
		t.Errorf("s3 faults %v, requests %v", sf, sr)
	}
}

func TestOpProxySetRateRefusesAnswersTheServiceCannotGive(t *testing.T) {
	kp, err := NewOpHTTP(Kinesis, "http://127.0.0.1:1", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	sp, err := NewOpHTTP(S3, "http://127.0.0.1:1", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, c := range []struct {
		p    *OpProxy
		op   string
		kind Kind
		ok   bool
	}{
		{kp, "GetRecords", Throughput, true},
		{kp, "GetRecords", ExpiredIterator, true},
		{kp, "ListShards", ExpiredIterator, false},
		{kp, "GetRecords", Throttling, false},
		{kp, "GetRecords", SlowDown, false},
		{kp, "", Throughput, false},
		{sp, "PutObject", SlowDown, true},
		{sp, "PutObject", Reset, true},
		{sp, "PutObject", Throughput, false},
	} {
		if err := c.p.SetRate(c.op, c.kind, 0.1); (err == nil) != c.ok {
			t.Errorf("%s SetRate(%q, %s): %v, want ok=%v", c.p.service, c.op, c.kind, err, c.ok)
		}
	}
}

// TestOpProxyDrawsReproducible: the faults an operation's requests meet depend on the seed
// and that operation's own sequence, not on other operations' requests in between.
func TestOpProxyDrawsReproducible(t *testing.T) {
	seq := func(seed uint64, others int) []Kind {
		p, err := NewOpHTTP(Kinesis, "http://127.0.0.1:1", seed)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.SetRate("GetRecords", Throughput, 0.05); err != nil {
			t.Fatal(err)
		}
		var out []Kind
		for range 4000 {
			for range others {
				if k, _ := p.draw("GetShardIterator"); k != "" {
					t.Fatalf("GetShardIterator met %s", k)
				}
			}
			k, _ := p.draw("GetRecords")
			out = append(out, k)
		}
		return out
	}
	a, b, c := seq(7, 0), seq(7, 3), seq(8, 0)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, other operations in between: different faults")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds, same faults")
	}
	n := 0
	for _, k := range a {
		if k == Throughput {
			n++
		}
	}
	if n < 140 || n > 260 { // 5 % of 4000 = 200
		t.Errorf("%d of 4000 GetRecords throttled at 5 %%", n)
	}
}

func TestOperationNamesS3Requests(t *testing.T) {
	for _, c := range []struct {
		method, target string
		copySource     bool
		want           string
	}{
		{"PUT", "/b/k/x.parquet?x-id=PutObject", false, "PutObject"},
		{"PUT", "/b/k/x.parquet", false, "PutObject"},
		{"PUT", "/b/k/x.parquet", true, "CopyObject"},
		{"PUT", "/b/k?partNumber=1&uploadId=u", false, "UploadPart"},
		{"PUT", "/b/k?partNumber=1&uploadId=u", true, "UploadPartCopy"},
		{"PUT", "/b/k?tagging", false, ""},
		{"PUT", "/b", false, "CreateBucket"},
		{"GET", "/b/k?x-id=GetObject", false, "GetObject"},
		{"GET", "/b/k", false, "GetObject"},
		{"GET", "/b?list-type=2&prefix=p", false, "ListObjectsV2"},
		{"GET", "/b?prefix=p", false, "ListObjects"},
		{"GET", "/b?uploads", false, "ListMultipartUploads"},
		{"GET", "/", false, "ListBuckets"},
		{"HEAD", "/b", false, "HeadBucket"},
		{"HEAD", "/b/k", false, "HeadObject"},
		{"DELETE", "/b/k", false, "DeleteObject"},
		{"DELETE", "/b/k?uploadId=u", false, "AbortMultipartUpload"},
		{"POST", "/b?delete", false, "DeleteObjects"},
		{"POST", "/b/k?uploads", false, "CreateMultipartUpload"},
		{"POST", "/b/k?uploadId=u", false, "CompleteMultipartUpload"},
	} {
		r := httptest.NewRequest(c.method, "http://127.0.0.1:7070"+c.target, nil)
		if c.copySource {
			r.Header.Set("X-Amz-Copy-Source", "/b/other")
		}
		if got := Operation(S3, r); got != c.want {
			t.Errorf("%s %s (copy %v): %q, want %q", c.method, c.target, c.copySource, got, c.want)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:4567/", nil)
	r.Header.Set("X-Amz-Target", "Kinesis_20131202.GetRecords")
	if got := Operation(Kinesis, r); got != "GetRecords" {
		t.Errorf("kinesis: %q", got)
	}
}
