package etl

import (
	"testing"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// fileStore is a file:// datalake in a temporary directory.
func fileStore(t testing.TB) objstore.Store {
	t.Helper()
	s, err := objstore.Open("file://"+t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// s3Store is an S3 datalake under a unique prefix of bucket recstream-datalake on the local
// gateway; Cleanup deletes everything under the prefix.
func s3Store(t testing.TB) objstore.Store {
	t.Helper()
	return stacktest.S3Store(t, "datalake", "etltest-")
}

// backends are the two datalake kinds the ETL must behave the same on.
var backends = []struct {
	name  string
	store func(testing.TB) objstore.Store
}{{"file", fileStore}, {"s3", s3Store}}
