// Package checkpointtest holds what tests of the lease store and of its users share: a
// monotonic clock they advance by hand, and a lease table of their own on the local dynalite.
package checkpointtest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

// Clock is an injectable monotonic clock (checkpoint.Config.Now): tests expire leases by
// advancing it. Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Table returns a DynamoDB client for the local dynalite (with opts, e.g. a middleware that
// injects failures) and a fresh table name prefix-<random>; the table is deleted when the test
// ends.
func Table(t testing.TB, prefix string, opts ...awsenv.Option) (*dynamodb.Client, string) {
	t.Helper()
	ep := stacktest.Endpoint(t, "dynamodb")
	stacktest.SetAWSEnv(t)
	table := stacktest.UniqueName(prefix)
	db, err := awsenv.DynamoDB(context.Background(), awsenv.DynamoDBConfig{LeaseTable: table, Region: "us-east-1", Endpoint: ep}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(table)}); err != nil {
			var nf *types.ResourceNotFoundException
			if !errors.As(err, &nf) {
				t.Errorf("delete table %s: %v", table, err)
			}
		}
	})
	return db, table
}
