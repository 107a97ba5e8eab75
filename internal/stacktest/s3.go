package stacktest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
)

// S3Store returns a store on the local S3 gateway under a unique prefix (prefix + random hex)
// of the bucket that config key s3.buckets.<bucket> names ("datalake", "artifacts",
// "recommendations"). Everything under the prefix is deleted in Cleanup.
func S3Store(t testing.TB, bucket, prefix string) objstore.Store {
	t.Helper()
	client := S3Client(t)
	name := strings.TrimPrefix(Value(t, "s3.buckets."+bucket), "s3://")
	s, err := objstore.Open("s3://"+name+"/"+UniqueName(prefix), client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		objs, err := s.List(ctx, "")
		if err != nil {
			t.Errorf("cleanup: list %s: %v", s.URL(""), err)
			return
		}
		for _, o := range objs {
			if err := s.Delete(ctx, o.Key); err != nil {
				t.Errorf("cleanup: %v", err)
				return
			}
		}
	})
	return s
}

// S3Client is a client of the local S3 gateway.
func S3Client(t testing.TB) *s3.Client {
	t.Helper()
	SetAWSEnv(t)
	client, err := awsenv.S3(context.Background(), awsenv.S3Config{Endpoint: Endpoint(t, "s3"), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// CreateBucket creates bucket on the local S3 gateway and deletes it (with its objects) in
// Cleanup.
func CreateBucket(t testing.TB, client *s3.Client, bucket string) {
	t.Helper()
	ctx := context.Background()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	t.Cleanup(func() {
		s, err := objstore.Open("s3://"+bucket, client)
		if err != nil {
			return
		}
		if objs, err := s.List(ctx, ""); err == nil {
			for _, o := range objs {
				_ = s.Delete(ctx, o.Key)
			}
		}
		_, _ = client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
	})
}
