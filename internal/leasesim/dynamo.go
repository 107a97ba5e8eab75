// Package leasesim simulates, in one process, what the lease code talks to: a DynamoDB table
// (the calls the lease store makes, with DynamoDB's conditional-write semantics and its
// on-demand capacity accounting) and a Kinesis stream (ListShards, GetShardIterator,
// GetRecords with synthetic records, and resharding). Both are served to real SDK clients
// through one Serialize middleware (after every Initialize middleware the code under test adds) that answers the operation in memory, so the code under
// test (checkpoint.Store, worker.Worker and the KCL library under it) runs unchanged, and
// under testing/synctest's virtual clock when the caller runs it in a bubble.
//
// It exists for the lease simulation (worker/sim_test.go); the real-stack tests use dynalite
// and kinesalite.
package leasesim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// On-demand prices used for $/hour (us-east-1, Standard table class, per million request
// units, as published since November 2024).
const (
	PricePerMillionRRU = 0.125
	PricePerMillionWRU = 0.625
)

// Usage is what a set of requests consumed, in DynamoDB's billing units.
type Usage struct {
	Requests map[string]int64 // per operation name
	RCU      float64          // read request units (0.5 per eventually consistent 4 KB)
	WCU      float64          // write request units (1 per 1 KB; index writes included)
}

// Sub returns u - v.
func (u Usage) Sub(v Usage) Usage {
	out := Usage{Requests: map[string]int64{}, RCU: u.RCU - v.RCU, WCU: u.WCU - v.WCU}
	for k, n := range u.Requests {
		if d := n - v.Requests[k]; d != 0 {
			out.Requests[k] = d
		}
	}
	return out
}

// DollarsPerHour is the on-demand price of consuming u over the given number of minutes,
// extrapolated to an hour.
func (u Usage) DollarsPerHour(minutes float64) float64 {
	return (u.RCU*PricePerMillionRRU + u.WCU*PricePerMillionWRU) / 1e6 * 60 / minutes
}

// TotalRequests sums Requests.
func (u Usage) TotalRequests() int64 {
	var n int64
	for _, v := range u.Requests {
		n += v
	}
	return n
}

// Index is a global secondary index of a Table.
type Index struct {
	Name       string
	HashKey    string // an S attribute; items without it are not in the index (sparse)
	Projection types.ProjectionType
}

// Table is one in-memory DynamoDB table with a single S hash key.
type Table struct {
	name    string
	hashKey string

	mu      sync.Mutex
	exists  bool
	items   map[string]item
	indexes []Index
	usage   Usage
}

// NewTable returns a table named name (not yet created: the lease store's EnsureTable or
// Create makes it) with hash key hashKey.
func NewTable(name, hashKey string) *Table {
	return &Table{name: name, hashKey: hashKey, items: map[string]item{}, usage: Usage{Requests: map[string]int64{}}}
}

// Create makes the table exist, as CreateTable would.
func (t *Table) Create() {
	t.mu.Lock()
	t.exists = true
	t.mu.Unlock()
}

// Usage returns the capacity consumed so far.
func (t *Table) Usage() Usage {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.usage.Sub(Usage{})
}

// Items returns a copy of every item.
func (t *Table) Items() []map[string]types.AttributeValue {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]map[string]types.AttributeValue, 0, len(t.items))
	for _, k := range t.sortedKeysLocked() {
		out = append(out, copyItem(t.items[k]))
	}
	return out
}

// Link is one client's connection to the simulated services; Cut makes every call of its
// clients fail at once (a killed or partitioned process).
type Link struct{ cut atomic.Bool }

// Cut cuts (true) or restores (false) the link.
func (l *Link) Cut(on bool) { l.cut.Store(on) }

var errCut = errors.New("leasesim: link cut (process killed or partitioned)")

// Client returns a DynamoDB client whose every call is answered by t. link may be nil.
func (t *Table) Client(link *Link) *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{Region: "us-east-1", APIOptions: []func(*middleware.Stack) error{
		func(st *middleware.Stack) error {
			return st.Serialize.Add(middleware.SerializeMiddlewareFunc("leasesimDynamoDB",
				func(ctx context.Context, in middleware.SerializeInput, _ middleware.SerializeHandler) (middleware.SerializeOutput, middleware.Metadata, error) {
					if link != nil && link.cut.Load() {
						return middleware.SerializeOutput{}, middleware.Metadata{}, errCut
					}
					if err := ctx.Err(); err != nil {
						return middleware.SerializeOutput{}, middleware.Metadata{}, err
					}
					out, err := t.serve(in.Parameters)
					return middleware.SerializeOutput{Result: out}, middleware.Metadata{}, err
				}), middleware.Before)
		}}})
}

func validation(format string, args ...any) error {
	return &smithy.GenericAPIError{Code: "ValidationException", Message: fmt.Sprintf(format, args...)}
}

func (t *Table) serve(params any) (any, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch p := params.(type) {
	case *dynamodb.DescribeTableInput:
		t.usage.Requests["DescribeTable"]++
		if aws.ToString(p.TableName) != t.name || !t.exists {
			return nil, &types.ResourceNotFoundException{Message: aws.String("Requested resource not found: Table: " + aws.ToString(p.TableName) + " not found")}
		}
		return &dynamodb.DescribeTableOutput{Table: t.describeLocked()}, nil
	case *dynamodb.CreateTableInput:
		t.usage.Requests["CreateTable"]++
		if aws.ToString(p.TableName) != t.name {
			return nil, validation("leasesim serves table %s only", t.name)
		}
		if t.exists {
			return nil, &types.ResourceInUseException{Message: aws.String("Table already exists: " + t.name)}
		}
		if len(p.KeySchema) != 1 || aws.ToString(p.KeySchema[0].AttributeName) != t.hashKey {
			return nil, validation("leasesim: key schema must be the single hash key %s", t.hashKey)
		}
		t.exists = true
		for _, g := range p.GlobalSecondaryIndexes {
			t.indexes = append(t.indexes, indexOf(g.IndexName, g.KeySchema, g.Projection))
		}
		return &dynamodb.CreateTableOutput{TableDescription: t.describeLocked()}, nil
	case *dynamodb.UpdateTableInput:
		t.usage.Requests["UpdateTable"]++
		if err := t.checkLocked(p.TableName); err != nil {
			return nil, err
		}
		for _, u := range p.GlobalSecondaryIndexUpdates {
			if c := u.Create; c != nil {
				for _, x := range t.indexes {
					if x.Name == aws.ToString(c.IndexName) {
						return nil, validation("index %s already exists", x.Name)
					}
				}
				t.indexes = append(t.indexes, indexOf(c.IndexName, c.KeySchema, c.Projection))
			}
		}
		return &dynamodb.UpdateTableOutput{TableDescription: t.describeLocked()}, nil
	case *dynamodb.GetItemInput:
		return t.getLocked(p)
	case *dynamodb.PutItemInput:
		return t.putLocked(p)
	case *dynamodb.UpdateItemInput:
		return t.updateLocked(p)
	case *dynamodb.DeleteItemInput:
		return t.deleteLocked(p)
	case *dynamodb.ScanInput:
		return t.scanLocked(p)
	case *dynamodb.QueryInput:
		return t.queryLocked(p)
	}
	return nil, validation("leasesim: operation %T is not simulated", params)
}

func indexOf(name *string, ks []types.KeySchemaElement, p *types.Projection) Index {
	x := Index{Name: aws.ToString(name), Projection: types.ProjectionTypeAll}
	if len(ks) > 0 {
		x.HashKey = aws.ToString(ks[0].AttributeName)
	}
	if p != nil && p.ProjectionType != "" {
		x.Projection = p.ProjectionType
	}
	return x
}

func (t *Table) describeLocked() *types.TableDescription {
	d := &types.TableDescription{TableName: aws.String(t.name), TableStatus: types.TableStatusActive,
		KeySchema:          []types.KeySchemaElement{{AttributeName: aws.String(t.hashKey), KeyType: types.KeyTypeHash}},
		BillingModeSummary: &types.BillingModeSummary{BillingMode: types.BillingModePayPerRequest},
		ItemCount:          aws.Int64(int64(len(t.items)))}
	for _, x := range t.indexes {
		d.GlobalSecondaryIndexes = append(d.GlobalSecondaryIndexes, types.GlobalSecondaryIndexDescription{
			IndexName: aws.String(x.Name), IndexStatus: types.IndexStatusActive,
			KeySchema:  []types.KeySchemaElement{{AttributeName: aws.String(x.HashKey), KeyType: types.KeyTypeHash}},
			Projection: &types.Projection{ProjectionType: x.Projection}})
	}
	return d
}

func (t *Table) checkLocked(name *string) error {
	if aws.ToString(name) != t.name || !t.exists {
		return &types.ResourceNotFoundException{Message: aws.String("Requested resource not found")}
	}
	return nil
}

// keyOf returns the hash key value of a Key map.
func (t *Table) keyOf(key map[string]types.AttributeValue) (string, error) {
	if len(key) != 1 {
		return "", validation("the provided key element does not match the schema")
	}
	v, ok := key[t.hashKey].(*types.AttributeValueMemberS)
	if !ok || v.Value == "" {
		return "", validation("the provided key element does not match the schema")
	}
	return v.Value, nil
}

// readUnits is the read cost of bytes read in one request: 4 KB units, at least one, halved
// for eventually consistent reads.
func readUnits(bytes int, consistent bool) float64 {
	u := math.Max(1, math.Ceil(float64(bytes)/4096))
	if !consistent {
		u /= 2
	}
	return u
}

// writeUnits is the write cost of an item of bytes: 1 KB units, at least one.
func writeUnits(bytes int) float64 { return math.Max(1, math.Ceil(float64(bytes)/1024)) }

// itemSize is DynamoDB's size of an item: attribute names plus values (strings in UTF-8
// bytes, numbers about one byte per two significant digits plus one).
func itemSize(it item) int {
	n := 0
	for k, v := range it {
		n += len(k)
		switch x := v.(type) {
		case *types.AttributeValueMemberS:
			n += len(x.Value)
		case *types.AttributeValueMemberN:
			digits := len(strings.TrimLeft(strings.TrimPrefix(x.Value, "-"), "0"))
			n += (digits+1)/2 + 1
		default:
			n++
		}
	}
	return n
}

func copyItem(it item) item {
	if it == nil {
		return nil
	}
	out := make(item, len(it))
	for k, v := range it {
		out[k] = v
	}
	return out
}

func newEnv(names map[string]string, values map[string]types.AttributeValue) *env {
	return &env{names: names, values: values, used: map[string]bool{}}
}

// chargeWrite adds the cost of replacing old with new (either may be nil) to the table and
// its indexes.
func (t *Table) chargeWrite(old, nw item) {
	t.usage.WCU += writeUnits(max(itemSize(old), itemSize(nw)))
	for _, x := range t.indexes {
		ov, oin := old[x.HashKey].(*types.AttributeValueMemberS)
		nv, nin := nw[x.HashKey].(*types.AttributeValueMemberS)
		switch {
		case oin && nin && ov.Value == nv.Value:
			if x.Projection != types.ProjectionTypeKeysOnly {
				t.usage.WCU += writeUnits(itemSize(nw))
			}
		case oin && nin:
			t.usage.WCU += 1 + writeUnits(itemSize(nw))
		case oin:
			t.usage.WCU++
		case nin:
			t.usage.WCU += writeUnits(itemSize(nw))
		}
	}
}

// conditionFailed charges a refused conditional write (DynamoDB bills it as a write of the
// existing item) and returns the exception.
func (t *Table) conditionFailed(old item) error {
	t.usage.WCU += writeUnits(itemSize(old))
	return &types.ConditionalCheckFailedException{Message: aws.String("The conditional request failed")}
}

func (t *Table) getLocked(p *dynamodb.GetItemInput) (any, error) {
	t.usage.Requests["GetItem"]++
	if err := t.checkLocked(p.TableName); err != nil {
		return nil, err
	}
	k, err := t.keyOf(p.Key)
	if err != nil {
		return nil, err
	}
	it := t.items[k]
	t.usage.RCU += readUnits(itemSize(it), aws.ToBool(p.ConsistentRead))
	return &dynamodb.GetItemOutput{Item: copyItem(it)}, nil
}

// conditionLocked is what every single-item write does first: the table and the key checked,
// the current item read, and the condition evaluated against it (ConditionalCheckFailed with
// the old item, as DynamoDB answers, when it is false).
func (t *Table) conditionLocked(table *string, key map[string]types.AttributeValue, names map[string]string,
	values map[string]types.AttributeValue, cond *string) (string, item, *env, error) {
	if err := t.checkLocked(table); err != nil {
		return "", nil, nil, err
	}
	k, err := t.keyOf(key)
	if err != nil {
		return "", nil, nil, err
	}
	old := t.items[k]
	e := newEnv(names, values)
	if c := aws.ToString(cond); c != "" {
		ok, err := e.evalCondition(c, old)
		if err != nil {
			return "", nil, nil, validation("%v", err)
		}
		if !ok {
			return "", nil, nil, t.conditionFailed(old)
		}
	}
	return k, old, e, nil
}

func (t *Table) putLocked(p *dynamodb.PutItemInput) (any, error) {
	t.usage.Requests["PutItem"]++
	k, old, e, err := t.conditionLocked(p.TableName, map[string]types.AttributeValue{t.hashKey: p.Item[t.hashKey]},
		p.ExpressionAttributeNames, p.ExpressionAttributeValues, p.ConditionExpression)
	if err != nil {
		return nil, err
	}
	if err := e.checkUnused(); err != nil {
		return nil, validation("%v", err)
	}
	nw := copyItem(p.Item)
	t.chargeWrite(old, nw)
	t.items[k] = nw
	return &dynamodb.PutItemOutput{}, nil
}

func (t *Table) updateLocked(p *dynamodb.UpdateItemInput) (any, error) {
	t.usage.Requests["UpdateItem"]++
	k, old, e, err := t.conditionLocked(p.TableName, p.Key, p.ExpressionAttributeNames, p.ExpressionAttributeValues, p.ConditionExpression)
	if err != nil {
		return nil, err
	}
	base := old
	if base == nil {
		base = item{t.hashKey: &types.AttributeValueMemberS{Value: k}}
	}
	nw, err := e.applyUpdate(aws.ToString(p.UpdateExpression), base)
	if err != nil {
		return nil, validation("%v", err)
	}
	if err := e.checkUnused(); err != nil {
		return nil, validation("%v", err)
	}
	t.chargeWrite(old, nw)
	t.items[k] = nw
	out := &dynamodb.UpdateItemOutput{}
	switch p.ReturnValues {
	case types.ReturnValueAllNew:
		out.Attributes = copyItem(nw)
	case types.ReturnValueAllOld:
		out.Attributes = copyItem(old)
	}
	return out, nil
}

func (t *Table) deleteLocked(p *dynamodb.DeleteItemInput) (any, error) {
	t.usage.Requests["DeleteItem"]++
	k, old, e, err := t.conditionLocked(p.TableName, p.Key, p.ExpressionAttributeNames, p.ExpressionAttributeValues, p.ConditionExpression)
	if err != nil {
		return nil, err
	}
	if err := e.checkUnused(); err != nil {
		return nil, validation("%v", err)
	}
	t.chargeWrite(old, nil)
	delete(t.items, k)
	return &dynamodb.DeleteItemOutput{}, nil
}

func (t *Table) sortedKeysLocked() []string {
	keys := make([]string, 0, len(t.items))
	for k := range t.items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// pageLimit is DynamoDB's 1 MB of data read per Scan or Query page.
const pageLimit = 1 << 20

// page reads items from keys (sorted) after start, up to limit items or 1 MB, and charges
// them as one request.
func (t *Table) page(keys []string, start map[string]types.AttributeValue, limit *int32, consistent bool) ([]item, map[string]types.AttributeValue, float64) {
	i := 0
	if start != nil {
		if s, ok := start[t.hashKey].(*types.AttributeValueMemberS); ok {
			i = sort.SearchStrings(keys, s.Value)
			if i < len(keys) && keys[i] == s.Value {
				i++
			}
		}
	}
	var out []item
	bytes := 0
	for ; i < len(keys); i++ {
		if limit != nil && len(out) >= int(*limit) {
			break
		}
		if bytes >= pageLimit {
			break
		}
		it := t.items[keys[i]]
		bytes += itemSize(it)
		out = append(out, copyItem(it))
	}
	var last map[string]types.AttributeValue
	if i < len(keys) && len(out) > 0 {
		last = map[string]types.AttributeValue{t.hashKey: &types.AttributeValueMemberS{Value: keys[i-1]}}
	}
	return out, last, readUnits(bytes, consistent)
}

func (t *Table) scanLocked(p *dynamodb.ScanInput) (any, error) {
	t.usage.Requests["Scan"]++
	if err := t.checkLocked(p.TableName); err != nil {
		return nil, err
	}
	if p.FilterExpression != nil || p.IndexName != nil {
		return nil, validation("leasesim: Scan supports no filter and no index")
	}
	keys := t.sortedKeysLocked()
	if n := aws.ToInt32(p.TotalSegments); n > 1 {
		seg := aws.ToInt32(p.Segment)
		var mine []string
		for i, k := range keys {
			if int32(i)%n == seg {
				mine = append(mine, k)
			}
		}
		keys = mine
	}
	items, last, ru := t.page(keys, p.ExclusiveStartKey, p.Limit, aws.ToBool(p.ConsistentRead))
	t.usage.RCU += ru
	return &dynamodb.ScanOutput{Items: items, Count: int32(len(items)), ScannedCount: int32(len(items)), LastEvaluatedKey: last}, nil
}

func (t *Table) queryLocked(p *dynamodb.QueryInput) (any, error) {
	t.usage.Requests["Query"]++
	if err := t.checkLocked(p.TableName); err != nil {
		return nil, err
	}
	if p.FilterExpression != nil {
		return nil, validation("leasesim: Query supports no filter")
	}
	attr := t.hashKey
	if p.IndexName != nil {
		found := false
		for _, x := range t.indexes {
			if x.Name == aws.ToString(p.IndexName) {
				attr, found = x.HashKey, true
			}
		}
		if !found {
			return nil, validation("the table does not have the specified index: %s", aws.ToString(p.IndexName))
		}
		if aws.ToBool(p.ConsistentRead) {
			return nil, validation("consistent reads are not supported on global secondary indexes")
		}
	}
	// KeyConditionExpression: "<path> = :v".
	e := newEnv(p.ExpressionAttributeNames, p.ExpressionAttributeValues)
	l, err := lex(aws.ToString(p.KeyConditionExpression))
	if err != nil {
		return nil, validation("%v", err)
	}
	name, err := e.path(l.next())
	if err != nil || name != attr {
		return nil, validation("query key condition must be %s = :value", attr)
	}
	if l.next() != "=" {
		return nil, validation("query key condition must be %s = :value", attr)
	}
	want, ok, err := e.operand(l.next(), nil)
	if err != nil || !ok || l.peek() != "" {
		return nil, validation("query key condition must be %s = :value", attr)
	}
	if err := e.checkUnused(); err != nil {
		return nil, validation("%v", err)
	}
	var keys []string
	for _, k := range t.sortedKeysLocked() {
		if v, ok := t.items[k][attr]; ok && equal(v, want) {
			keys = append(keys, k)
		}
	}
	items, last, ru := t.page(keys, p.ExclusiveStartKey, p.Limit, aws.ToBool(p.ConsistentRead))
	t.usage.RCU += ru
	return &dynamodb.QueryOutput{Items: items, Count: int32(len(items)), ScannedCount: int32(len(items)), LastEvaluatedKey: last}, nil
}
