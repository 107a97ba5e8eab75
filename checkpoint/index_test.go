package checkpoint

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// TestEnsureTableOnTableWithoutClaimIndex: a lease table created before the claim index (by
// an older worker) still starts a worker: EnsureTable asks DynamoDB to add the index (dynalite
// refuses to add one to an on-demand table; DynamoDB builds it in the background), and while
// the index is missing the claim Query fails over to the per-worker Scans (noIndex).
func TestEnsureTableOnTableWithoutClaimIndex(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(AttrShardID), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(AttrShardID), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dynamodb.NewTableExistsWaiter(db).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, db, table, "w1", newFakeClock(), func(c *Config) { c.ClaimIndex = true }) // Init: EnsureTable
	d, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		t.Fatal(err)
	}
	s.coord.on = true
	s.readClaims(ctx)
	s.mu.Lock()
	noIndex, known := s.coord.noIndex, s.leaderKnownLocked()
	s.mu.Unlock()
	if hasIndex(d.Table, IndexClaims) {
		// This DynamoDB added the index (real DynamoDB builds it in the background): the claim
		// Query must then not have fallen back, unless the index was still being built.
		if st := d.Table.GlobalSecondaryIndexes[0].IndexStatus; st == types.IndexStatusActive && noIndex {
			t.Errorf("the claim index is %s but the store fell back to Scans", st)
		}
		return
	}
	if !noIndex || known {
		t.Errorf("without the claim index: noIndex = %v, leader known = %v; want the per-worker Scans (true, false)", noIndex, known)
	}
}
