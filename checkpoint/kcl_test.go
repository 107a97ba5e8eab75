package checkpoint

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go/middleware"
	"github.com/sirupsen/logrus"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/config"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	kclworker "github.com/vmware/vmware-go-kcl-v2/clientlibrary/worker"
	kclzap "github.com/vmware/vmware-go-kcl-v2/logger/zap"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

// nopProcessor is the ten-line seam: this test is about leases, not records.
type nopProcessor struct{}

func (nopProcessor) Initialize(*kcl.InitializationInput)     {}
func (nopProcessor) ProcessRecords(*kcl.ProcessRecordsInput) {}
func (nopProcessor) Shutdown(*kcl.ShutdownInput)             {}

type nopFactory struct{}

func (nopFactory) CreateProcessor() kcl.IRecordProcessor { return nopProcessor{} }

// partition cuts a client off from DynamoDB, like a killed or partitioned process: its
// leases stay in the table under its name with frozen counters.
type partition struct{ on atomic.Bool }

func (p *partition) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("partition",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if p.on.Load() {
					return middleware.InitializeOutput{}, middleware.Metadata{}, errors.New("partitioned from DynamoDB")
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

// The recommended library settings (see the README's "Lease table" section), exercised on the
// real library with kinesalite and dynalite: 4 shards and 2 workers are all leased within 30 s,
// and a killed worker's shards are taken over within 30 s.
func TestKCLWorkersShareShardsAndTakeOver(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short (about 30 s: two KCL workers and a failover); CI runs it")
	}
	kep := stacktest.Endpoint(t, "kinesis")
	dep := stacktest.Endpoint(t, "dynamodb")
	stacktest.SetAWSEnv(t)
	logrus.SetOutput(io.Discard) // the library's renewer logs through the logrus global
	ctx := context.Background()

	stream := stacktest.UniqueName("ckpt-kcl-")
	kc, err := awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: stream, Shards: 4, Region: "us-east-1", Endpoint: kep})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(stream), ShardCount: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = kc.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	})
	if err := kinesis.NewStreamExistsWaiter(kc, func(o *kinesis.StreamExistsWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
		Wait(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(stream)}, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	_, table := testTable(t)
	const failover = 10 * time.Second
	type member struct {
		id     string
		store  *Store
		worker *kclworker.Worker
		cut    *partition
	}
	start := func(id string) *member {
		m := &member{id: id, cut: &partition{}}
		db, err := awsenv.DynamoDB(ctx, awsenv.DynamoDBConfig{LeaseTable: table, Region: "us-east-1", Endpoint: dep}, m.cut.option)
		if err != nil {
			t.Fatal(err)
		}
		m.store, err = New(Config{Table: table, WorkerID: id, FailoverTime: failover}, db)
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.NewKinesisClientLibConfig(table, stream, "us-east-1", id).
			WithTableName(table).
			WithInitialPositionInStream(config.TRIM_HORIZON).
			WithFailoverTimeMillis(int(failover / time.Millisecond)).
			WithLeaseRefreshWaitTime(2500).
			WithShardSyncIntervalMillis(2000).
			WithLeaseStealing(true).
			WithLeaseStealingIntervalMillis(5000).
			WithIdleTimeBetweenReadsInMillis(500).
			WithMaxRecords(100).
			WithLogger(kclzap.NewZapLogger(zap.NewNop().Sugar()))
		cfg.LeaseStealingClaimTimeoutMillis = int(failover / time.Millisecond)
		m.worker = kclworker.NewWorker(nopFactory{}, cfg).WithKinesis(kc).WithCheckpointer(m.store)
		if err := m.worker.Start(); err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		return m
	}
	observer, err := New(Config{Table: table, WorkerID: "observer", FailoverTime: failover}, mustDB(t, dep, table))
	if err != nil {
		t.Fatal(err)
	}
	owners := func() map[string]int {
		leases, err := observer.ListLeases(ctx)
		if err != nil {
			t.Logf("list leases: %v", err)
			return nil
		}
		n := map[string]int{}
		for _, l := range leases {
			n[l.Owner]++
		}
		return n
	}

	began := time.Now()
	a, b := start("worker-a"), start("worker-b")
	defer b.worker.Shutdown()
	defer a.worker.Shutdown()
	stacktest.Eventually(t, 30*time.Second, 250*time.Millisecond, func() bool {
		n := owners()
		return n["worker-a"]+n["worker-b"] == 4
	}, "4 shards not all leased by 2 workers")
	t.Logf("all 4 shards leased %s after start: %v", time.Since(began).Round(100*time.Millisecond), owners())

	// A third worker joins: lease stealing (ClaimShard, polite hand-over) gives it one shard.
	c := start("worker-c")
	defer c.worker.Shutdown()
	joined := time.Now()
	stacktest.Eventually(t, 45*time.Second, 250*time.Millisecond, func() bool {
		n := owners()
		return n["worker-c"] >= 1 && n["worker-a"]+n["worker-b"]+n["worker-c"] == 4
	}, "joining worker-c got no shard")
	t.Logf("worker-c got a shard %s after joining: %v", time.Since(joined).Round(100*time.Millisecond), owners())

	// Kill the worker with the most leases; the others take its shards over.
	n := owners()
	victim := a
	for _, m := range []*member{b, c} {
		if n[m.id] > n[victim.id] {
			victim = m
		}
	}
	victim.cut.on.Store(true)
	killed := time.Now()
	stacktest.Eventually(t, 30*time.Second, 250*time.Millisecond, func() bool {
		n := owners()
		return n[victim.id] == 0 && n[""] == 0 && len(n) >= 1
	}, "shards of killed %s not taken over", victim.id)
	t.Logf("shards of killed %s taken over %s later: %v", victim.id, time.Since(killed).Round(100*time.Millisecond), owners())
	for _, id := range []string{"shardId-000000000000", "shardId-000000000001", "shardId-000000000002", "shardId-000000000003"} {
		if _, ok := victim.store.HeldUntil(id); ok {
			if until, _ := victim.store.HeldUntil(id); time.Now().Before(until) {
				t.Errorf("killed %s still believes it holds %s until %v", victim.id, id, until)
			}
		}
	}
}

func mustDB(t *testing.T, ep, table string) *dynamodb.Client {
	t.Helper()
	db, err := awsenv.DynamoDB(context.Background(), awsenv.DynamoDBConfig{LeaseTable: table, Region: "us-east-1", Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	return db
}
