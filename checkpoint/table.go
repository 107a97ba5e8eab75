package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"go.uber.org/zap"
)

// This file is the store's access to the lease table: every DynamoDB request is made here.
// The conditional writes return the SDK's error unwrapped (their callers test it for
// *types.ConditionalCheckFailedException and wrap it with the lease operation).

// claimIndex is the definition of IndexClaims (see leader.go): keyed on ClaimRequest, so
// sparse, with every attribute projected (rows are a few hundred bytes).
func claimIndex() (types.AttributeDefinition, types.KeySchemaElement, *types.Projection) {
	return types.AttributeDefinition{AttributeName: aws.String(AttrClaim), AttributeType: types.ScalarAttributeTypeS},
		types.KeySchemaElement{AttributeName: aws.String(AttrClaim), KeyType: types.KeyTypeHash},
		&types.Projection{ProjectionType: types.ProjectionTypeAll}
}

// EnsureTable creates the lease table with on-demand billing unless it exists (with the claim
// index when Config.ClaimIndex is set), adds the claim index to a table created without it
// when ClaimIndex is set (UpdateTable; until DynamoDB has built it, workers fall back to
// Scans), then waits with the SDK's table-exists waiter until
// the table is ACTIVE. Concurrent callers are fine.
func (s *Store) EnsureTable(ctx context.Context) error {
	desc, err := s.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.cfg.Table)})
	var nf *types.ResourceNotFoundException
	def, ks, proj := claimIndex()
	switch {
	case err == nil && desc.Table != nil && s.cfg.ClaimIndex && !hasIndex(desc.Table, IndexClaims):
		_, err = s.db.UpdateTable(ctx, &dynamodb.UpdateTableInput{
			TableName:            aws.String(s.cfg.Table),
			AttributeDefinitions: []types.AttributeDefinition{def},
			GlobalSecondaryIndexUpdates: []types.GlobalSecondaryIndexUpdate{{Create: &types.CreateGlobalSecondaryIndexAction{
				IndexName: aws.String(IndexClaims), KeySchema: []types.KeySchemaElement{ks}, Projection: proj}}},
		})
		var inUse *types.ResourceInUseException
		var le *types.LimitExceededException
		if err != nil && !errors.As(err, &inUse) && !errors.As(err, &le) {
			// Not fatal: without the index every worker Scans, as before.
			s.log.Warn("cannot add the claim index to the lease table", zap.String("table", s.cfg.Table), zap.Error(err))
		} else if err == nil {
			s.log.Info("adding the claim index to the lease table", zap.String("table", s.cfg.Table), zap.String("index", IndexClaims))
		}
	case errors.As(err, &nf):
		in := &dynamodb.CreateTableInput{
			TableName:            aws.String(s.cfg.Table),
			AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(AttrShardID), AttributeType: types.ScalarAttributeTypeS}},
			KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(AttrShardID), KeyType: types.KeyTypeHash}},
			BillingMode:          types.BillingModePayPerRequest,
		}
		if s.cfg.ClaimIndex {
			in.AttributeDefinitions = append(in.AttributeDefinitions, def)
			in.GlobalSecondaryIndexes = []types.GlobalSecondaryIndex{{IndexName: aws.String(IndexClaims),
				KeySchema: []types.KeySchemaElement{ks}, Projection: proj}}
		}
		_, err = s.db.CreateTable(ctx, in)
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("create lease table %s: %w", s.cfg.Table, err)
		}
		if err == nil {
			s.log.Info("created lease table", zap.String("table", s.cfg.Table))
		}
	case err != nil:
		return fmt.Errorf("describe lease table %s: %w", s.cfg.Table, err)
	}
	maxWait := time.Until(deadlineOr(ctx, time.Now().Add(s.cfg.CreateTimeout)))
	w := dynamodb.NewTableExistsWaiter(s.db, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 100 * time.Millisecond
		o.MaxDelay = 2 * time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.cfg.Table)}, maxWait); err != nil {
		return fmt.Errorf("wait for lease table %s to be active: %w", s.cfg.Table, err)
	}
	return nil
}

// hasIndex reports whether the table has a global secondary index named name.
func hasIndex(t *types.TableDescription, name string) bool {
	for _, x := range t.GlobalSecondaryIndexes {
		if aws.ToString(x.IndexName) == name {
			return true
		}
	}
	return false
}

// deadlineOr returns ctx's deadline, or def when it has none.
func deadlineOr(ctx context.Context, def time.Time) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return def
}

// ListLeases returns every row of the table, sorted by shard id, reading all Scan pages with
// consistent reads. The `status` command and ListActiveWorkers use it.
func (s *Store) ListLeases(ctx context.Context) ([]Lease, error) {
	in := &dynamodb.ScanInput{TableName: aws.String(s.cfg.Table), ConsistentRead: aws.Bool(true)}
	if s.cfg.ScanPageSize > 0 {
		in.Limit = aws.Int32(s.cfg.ScanPageSize)
	}
	var out []Lease
	p := dynamodb.NewScanPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("scan lease table %s: %w", s.cfg.Table, err)
		}
		for _, item := range page.Items {
			l, err := parseLease(item)
			if err != nil {
				return nil, fmt.Errorf("scan lease table %s: %w", s.cfg.Table, err)
			}
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ShardID < out[j].ShardID })
	return out, nil
}

// getLease reads shardID's row with a consistent GetItem; ok is false when there is none.
func (s *Store) getLease(ctx context.Context, shardID string) (Lease, bool, error) {
	return s.readLease(ctx, shardID, true)
}

// readLease reads one row; consistent false costs half a read unit and may return a state up
// to about a second old.
func (s *Store) readLease(ctx context.Context, shardID string, consistent bool) (Lease, bool, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.cfg.Table),
		Key:            key(shardID),
		ConsistentRead: aws.Bool(consistent),
	})
	if err != nil {
		return Lease{}, false, fmt.Errorf("get lease row: %w", err)
	}
	if len(out.Item) == 0 {
		return Lease{}, false, nil
	}
	l, err := parseLease(out.Item)
	if err != nil {
		return Lease{}, false, fmt.Errorf("lease table %s: %w", s.cfg.Table, err)
	}
	return l, true, nil
}

// putRow writes item, a new row, conditional on no row with its key.
func (s *Store) putRow(ctx context.Context, item map[string]types.AttributeValue) error {
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                aws.String(s.cfg.Table),
		Item:                     item,
		ConditionExpression:      aws.String("attribute_not_exists(#id)"),
		ExpressionAttributeNames: map[string]string{"#id": AttrShardID},
	})
	return err
}

// updateRow applies the update expression to shardID's row if cond holds.
func (s *Store) updateRow(ctx context.Context, shardID, update, cond string, names map[string]string,
	values map[string]types.AttributeValue) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.cfg.Table),
		Key:                       key(shardID),
		UpdateExpression:          aws.String(update),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	})
	return err
}

// deleteRow deletes shardID's row if it is free or finished (SHARD_END).
func (s *Store) deleteRow(ctx context.Context, shardID string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.cfg.Table),
		Key:                       key(shardID),
		ConditionExpression:       aws.String("attribute_not_exists(#owner) OR #cp = :end"),
		ExpressionAttributeNames:  map[string]string{"#owner": AttrOwner, "#cp": AttrCheckpoint},
		ExpressionAttributeValues: map[string]types.AttributeValue{":end": str(ShardEnd)},
	})
	return err
}

// key is the primary key of shardID's row.
func key(shardID string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrShardID: str(shardID)}
}

// str is a string attribute value.
func str(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

// num is a number attribute value.
func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

// stamp formats a wall-clock time for the informational attributes (LeaseTimeout,
// CheckpointTime).
func stamp(t time.Time) types.AttributeValue { return str(t.UTC().Format(time.RFC3339Nano)) }
