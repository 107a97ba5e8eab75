package leasesim_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/checkpoint/checkpointtest"
	"github.com/recstream/recstream/internal/leasesim"
)

// leaseScript drives two lease stores through every transition of the lease state table
// (acquire, refusal, renewal, checkpoint, claim, hand-over, release, expiry, take-over, a
// fenced write refused, row removal) and returns each step's outcome and the final rows.
func leaseScript(t *testing.T, db *dynamodb.Client, table string) ([]string, []checkpoint.Lease) {
	t.Helper()
	clock := checkpointtest.NewClock(time.Unix(1_000_000, 0))
	store := func(id string) *checkpoint.Store {
		s, err := checkpoint.New(checkpoint.Config{Table: table, WorkerID: id, FailoverTime: 10 * time.Second, Now: clock.Now}, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Init(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := store("a"), store("b")
	st := func(id string) *par.ShardStatus {
		return &par.ShardStatus{ID: id, Mux: &sync.RWMutex{}, StartingSequenceNumber: "49000000000000000000"}
	}
	outcome := func(err error) string {
		var le *checkpoint.LeaseError
		var ccf *types.ConditionalCheckFailedException
		switch {
		case err == nil:
			return "ok"
		case errors.As(err, &le):
			return le.Err.Error()
		case errors.As(err, &ccf):
			return "conditional check failed"
		}
		return "error: " + err.Error()
	}
	var out []string
	step := func(name string, err error) { out = append(out, name+": "+outcome(err)) }
	s1a, s1b, s2a, s2b := st("s1"), st("s1"), st("s2"), st("s2")
	step("a acquires s1", a.GetLease(s1a, "a"))
	step("b acquires s1", b.GetLease(s1b, "b"))
	step("a renews s1", a.GetLease(s1a, "a"))
	s1a.SetCheckpoint("49000000000000000010")
	step("a checkpoints s1", a.CheckpointSequence(s1a))
	step("b claims s1", b.ClaimShard(s1b, "b"))
	step("a renews claimed s1", a.GetLease(s1a, "a"))
	s1a.SetCheckpoint("49000000000000000020")
	step("a checkpoints claimed s1", a.CheckpointSequence(s1a))
	step("a releases s1", a.RemoveLeaseOwner("s1"))
	step("a acquires s1 claimed by b", a.GetLease(st("s1"), "a"))
	step("b acquires s1", b.GetLease(s1b, "b"))
	step("b acquires s2", b.GetLease(s2b, "b"))
	step("a acquires s2", a.GetLease(s2a, "a"))
	clock.Advance(11 * time.Second)
	step("a takes expired s2", a.GetLease(s2a, "a"))
	s2b.SetCheckpoint("49000000000000000030")
	step("b checkpoints lost s2", b.CheckpointSequence(s2b))
	step("remove held s2", a.RemoveLeaseInfo("s2"))
	s2a.SetCheckpoint(checkpoint.ShardEnd)
	step("a ends s2", a.CheckpointSequence(s2a))
	step("remove finished s2", a.RemoveLeaseInfo("s2"))
	leases, err := a.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range leases {
		leases[i].LeaseTimeout, leases[i].CheckpointTime = time.Time{}, time.Time{} // wall clock
	}
	return out, leases
}

// TestConformsToDynalite: the lease store sees the same outcomes and leaves the same rows on
// the simulated table as on dynalite (the local stack's DynamoDB).
func TestConformsToDynalite(t *testing.T) {
	sim := leasesim.NewTable("recstream-conformance", checkpoint.AttrShardID)
	simSteps, simRows := leaseScript(t, sim.Client(nil), "recstream-conformance")
	db, table := checkpointtest.Table(t, "leasesim-conf-")
	realSteps, realRows := leaseScript(t, db, table)
	if !reflect.DeepEqual(simSteps, realSteps) {
		t.Errorf("outcomes differ:\nsimulated %q\ndynalite  %q", simSteps, realSteps)
	}
	if !reflect.DeepEqual(simRows, realRows) {
		t.Errorf("rows differ:\nsimulated %+v\ndynalite  %+v", simRows, realRows)
	}
	want := "b checkpoints lost s2: lease lost"
	if simSteps[13] != want {
		t.Errorf("step 13 = %q, want %q (the script no longer exercises fencing)", simSteps[13], want)
	}
}

// TestCapacityUnits: reads in 4 KB units (halved when eventually consistent), writes in 1 KB
// units of the larger of the old and new item, refused conditional writes billed, Scan pages
// billed on the bytes they read.
func TestCapacityUnits(t *testing.T) {
	ctx := context.Background()
	tab := leasesim.NewTable("t-units", "k")
	tab.Create()
	db := tab.Client(nil)
	str := func(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }
	big := string(make([]byte, 5000))
	cases := []struct {
		name     string
		call     func() error
		rcu, wcu float64
	}{
		{"put 1 KB item", func() error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("t-units"), Item: map[string]types.AttributeValue{"k": str("a"), "v": str("x")}})
			return err
		}, 0, 1},
		{"put 5 KB item", func() error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("t-units"), Item: map[string]types.AttributeValue{"k": str("b"), "v": str(big)}})
			return err
		}, 0, 5},
		{"consistent get of 5 KB", func() error {
			_, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t-units"), Key: map[string]types.AttributeValue{"k": str("b")}, ConsistentRead: aws.Bool(true)})
			return err
		}, 2, 0},
		{"eventual get of a small item", func() error {
			_, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t-units"), Key: map[string]types.AttributeValue{"k": str("a")}})
			return err
		}, 0.5, 0},
		{"refused update of 5 KB item", func() error {
			_, err := db.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String("t-units"), Key: map[string]types.AttributeValue{"k": str("b")},
				UpdateExpression: aws.String("SET #v = :v"), ConditionExpression: aws.String("attribute_not_exists(#v)"),
				ExpressionAttributeNames: map[string]string{"#v": "v"}, ExpressionAttributeValues: map[string]types.AttributeValue{":v": str("y")}})
			var ccf *types.ConditionalCheckFailedException
			if !errors.As(err, &ccf) {
				return fmt.Errorf("want ConditionalCheckFailedException, got %v", err)
			}
			return nil
		}, 0, 5},
		{"update shrinking 5 KB to 1 KB", func() error {
			_, err := db.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String("t-units"), Key: map[string]types.AttributeValue{"k": str("b")},
				UpdateExpression: aws.String("SET #v = :v"), ExpressionAttributeNames: map[string]string{"#v": "v"},
				ExpressionAttributeValues: map[string]types.AttributeValue{":v": str("y")}})
			return err
		}, 0, 5},
		{"consistent scan of two small items", func() error {
			_, err := db.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String("t-units"), ConsistentRead: aws.Bool(true)})
			return err
		}, 1, 0},
	}
	for _, c := range cases {
		before := tab.Usage()
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		d := tab.Usage().Sub(before)
		if d.RCU != c.rcu || d.WCU != c.wcu {
			t.Errorf("%s: %.1f RCU %.1f WCU, want %.1f RCU %.1f WCU", c.name, d.RCU, d.WCU, c.rcu, c.wcu)
		}
	}
}
