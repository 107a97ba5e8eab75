package stacktest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
)

// S3Store returns a store on the local S3 gateway under a unique prefix (prefix + random hex)
// of the bucket that config key s3.buckets.<bucket> names ("datalake", "artifacts",
// "recommendations"). Everything under the prefix is deleted in Cleanup.
func S3Store(t testing.TB, bucket, prefix string) objstore.Store {
	t.Helper()
	SetAWSEnv(t)
	endpoint := Endpoint(t, "s3")
	client, err := awsenv.S3(context.Background(), awsenv.S3Config{Endpoint: endpoint, Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
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
