package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/checkpoint/leasestatus"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

func ms(n int64) *int64 { return &n }

// TestStatusPrint: the table `recstream status` prints (the lines come from leasestatus, whose
// tests check them): workers with their stale leases, unowned shards, checkpoint ages.
func TestStatusPrint(t *testing.T) {
	workers := []leasestatus.Worker{{Worker: "w-a", Leases: 2, Stale: 1}, {Worker: "w-b", Leases: 1}, {Worker: "", Leases: 1}}
	shards := []leasestatus.Shard{
		{ShardID: "shardId-000000000000", Owner: "w-b", Checkpoint: "1", InLeaseTable: true, LagMillis: ms(10), LeaseInfo: leasestatus.LeaseInfo{CheckpointAgeMillis: ms(3000)}},
		{ShardID: "shardId-000000000001", Owner: "w-a", Checkpoint: "2", InLeaseTable: true, LagMillis: ms(5000), LeaseInfo: leasestatus.LeaseInfo{CheckpointAgeMillis: ms(90_000), LeaseStale: true}},
		{ShardID: "shardId-000000000002", Owner: "w-a", Checkpoint: "3", InLeaseTable: true},
		{ShardID: "shardId-000000000003", Checkpoint: checkpoint.ShardEnd, Closed: true, InLeaseTable: true, LagMillis: ms(0), LeaseInfo: leasestatus.LeaseInfo{CheckpointAgeMillis: ms(3_600_000)}},
		{ShardID: "shardId-000000000004", InLeaseTable: true, LagMillis: ms(7)},
	}
	var out bytes.Buffer
	printStatus(&App{Stdout: &out}, StatusReport{Stream: "s", LeaseTable: "t", Workers: workers, Shards: shards})
	for _, line := range []string{"(no owner)", "w-a (stale)", "1m30s"} {
		if !strings.Contains(out.String(), line) {
			t.Fatalf("output lacks %q:\n%s", line, out.String())
		}
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			lines[f[0]] = strings.Join(f[1:], " ")
		}
	}
	if lines["w-a"] != "2 1" || lines["(open"] != "shards) 4" {
		t.Fatalf("worker lines %q, %q:\n%s", lines["w-a"], lines["(open"], out.String())
	}
}

// TestStatusAt64Shards: `status --json` against a 64-shard stream whose leases four workers
// hold: every shard once, sorted, with its owner, lag and checkpoint age, and the per-worker
// counts, within a few seconds.
func TestStatusAt64Shards(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test needs the local stack (not with -short)")
	}
	stacktest.SetAWSEnv(t)
	ctx := context.Background()
	const shards = 64
	stream := stacktest.UniqueName("st-")
	kc, err := awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: stream, Shards: shards, Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "kinesis")})
	if err != nil {
		t.Fatal(err)
	}
	db, err := awsenv.DynamoDB(ctx, awsenv.DynamoDBConfig{LeaseTable: stream, Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "dynamodb")})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.CreateStream(t, kc, stream, shards)
	t.Cleanup(func() {
		_, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(stream)})
	})
	// One record per shard (its sequence number is the shard's checkpoint), and a second one
	// on shard 5 (lag).
	listed, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil || len(listed.Shards) != shards {
		t.Fatalf("list shards: %v (%d)", err, len(listed.Shards))
	}
	in := &kinesis.PutRecordsInput{StreamName: aws.String(stream)}
	for _, s := range listed.Shards {
		in.Records = append(in.Records, ktypes.PutRecordsRequestEntry{Data: []byte("x"), PartitionKey: aws.String("k"),
			ExplicitHashKey: s.HashKeyRange.StartingHashKey})
	}
	put, err := kc.PutRecords(ctx, in)
	if err != nil || aws.ToInt32(put.FailedRecordCount) != 0 {
		t.Fatalf("put records: %v", err)
	}
	h, _ := new(big.Int).SetString(aws.ToString(listed.Shards[5].HashKeyRange.StartingHashKey), 10)
	if _, err := kc.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), Data: []byte("y"), PartitionKey: aws.String("k"),
		ExplicitHashKey: aws.String(h.String())}); err != nil {
		t.Fatal(err)
	}
	// Four workers hold 16 leases each and checkpointed at their record; shard 63 is free.
	stores := make([]*checkpoint.Store, 4)
	for i := range stores {
		stores[i], err = checkpoint.New(checkpoint.Config{Table: stream, WorkerID: fmt.Sprintf("w%d", i), FailoverTime: time.Minute}, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := stores[i].Init(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, shards)
	for i, s := range listed.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &par.ShardStatus{ID: aws.ToString(s.ShardId), Mux: &sync.RWMutex{}}
			store := stores[i%4]
			if err := store.GetLease(st, store.WorkerID()); err != nil {
				errs <- err
				return
			}
			st.SetCheckpoint(aws.ToString(put.Records[i].SequenceNumber))
			if err := store.CheckpointSequence(st); err != nil {
				errs <- err
				return
			}
			if i == shards-1 {
				errs <- store.RemoveLeaseOwner(st.ID)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	env := append(os.Environ(), "RECSTREAM_KINESIS_STREAM="+stream, "RECSTREAM_DYNAMODB_LEASE_TABLE="+stream,
		"RECSTREAM_S3_BUCKETS_ARTIFACTS=file://"+t.TempDir())
	var out, errb bytes.Buffer
	began := time.Now()
	if code := run(ctx, []string{"--config", "../../config.yaml", "status", "--json", "--sort", "lag"}, env, &out, &errb); code != exitOK {
		t.Fatalf("status exit %d: %s", code, errb.String())
	}
	took := time.Since(began)
	var rep StatusReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decode: %v\n%s", err, out.String())
	}
	if len(rep.Shards) != shards {
		t.Fatalf("%d shard lines, want %d", len(rep.Shards), shards)
	}
	if first := rep.Shards[0]; first.ShardID != aws.ToString(listed.Shards[5].ShardId) || first.LagMillis == nil || *first.LagMillis <= 0 {
		t.Fatalf("--sort lag: first line %+v, want shard 5 with a lag", first)
	}
	for _, s := range rep.Shards {
		if s.Error != "" || s.LagMillis == nil || s.CheckpointAgeMillis == nil || s.CheckpointTime == nil {
			t.Fatalf("shard line %+v: want lag and checkpoint age", s)
		}
		if *s.CheckpointAgeMillis > time.Minute.Milliseconds() {
			t.Fatalf("checkpoint age %d ms for a checkpoint written just now", *s.CheckpointAgeMillis)
		}
	}
	want := []leasestatus.Worker{{Worker: "w0", Leases: 16}, {Worker: "w1", Leases: 16}, {Worker: "w2", Leases: 16}, {Worker: "w3", Leases: 15}, {Worker: "", Leases: 1}}
	if fmt.Sprint(rep.Workers) != fmt.Sprint(want) {
		t.Fatalf("workers %+v, want %+v", rep.Workers, want)
	}
	t.Logf("status of %d shards took %s", shards, took.Round(time.Millisecond))
}
