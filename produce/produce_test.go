package produce_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"go.uber.org/zap/zaptest"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
	"github.com/recstream/recstream/produce"
	"github.com/recstream/recstream/worker"
)

func catalog() produce.Catalog {
	return produce.Catalog{
		Customers: []produce.Customer{{Number: 103, City: "Nantes", Country: "France", CreditLimit: 21000}, {Number: 112, City: "Las Vegas", Country: "USA", CreditLimit: 71800}, {Number: 114, City: "Melbourne", Country: "Australia", CreditLimit: 117300}},
		Products:  []string{"S10_1678", "S10_1949", "S12_1099", "S18_3233", "S50_1514"},
	}
}

var limits = worker.Limits{MaxBytes: 64 << 10, MaxBrowseHistory: 100, RejectUnknown: true} // unknown_field events are rejected only under worker.unknown_fields: reject

func TestGeneratorEventsDecode(t *testing.T) {
	g, err := produce.NewGenerator(produce.GenConfig{Seed: 7, UnseenRatio: 0.2}, catalog())
	if err != nil {
		t.Fatal(err)
	}
	known := map[int64]bool{103: true, 112: true, 114: true}
	unseen, stringQty, cart := 0, 0, 0
	const n = 2000
	for i := 0; i < n; i++ {
		ev := g.Next()
		if ev.Bad != "" {
			t.Fatalf("bad event with bad-ratio 0: %s", ev.Bad)
		}
		got, err := worker.Decode(ev.Data, limits)
		if err != nil {
			t.Fatalf("event %d does not decode: %v\n%s", i, err, ev.Data)
		}
		if got.SessionID != ev.PartitionKey {
			t.Fatalf("partition key %q != session id %q", ev.PartitionKey, got.SessionID)
		}
		if len(got.BrowseHistory) < 1 || len(got.BrowseHistory) > 10 {
			t.Fatalf("browse history of %d items", len(got.BrowseHistory))
		}
		if !known[got.CustomerNumber] {
			unseen++
		}
		for _, it := range got.BrowseHistory {
			if it.InShoppingCart {
				cart++
			}
		}
		if strings.Contains(string(ev.Data), `"quantity":"`) {
			stringQty++
		}
	}
	if share := float64(unseen) / n; share < 0.15 || share > 0.25 {
		t.Errorf("unseen share %.3f, want about 0.2", share)
	}
	if stringQty == 0 || cart == 0 {
		t.Errorf("string quantities %d, cart items %d: want some of each", stringQty, cart)
	}
}

func TestGeneratorDeterministic(t *testing.T) {
	a, _ := produce.NewGenerator(produce.GenConfig{Seed: 1, BadRatio: 0.3, UnseenRatio: 0.1}, catalog())
	b, _ := produce.NewGenerator(produce.GenConfig{Seed: 1, BadRatio: 0.3, UnseenRatio: 0.1}, catalog())
	c, _ := produce.NewGenerator(produce.GenConfig{Seed: 2, BadRatio: 0.3, UnseenRatio: 0.1}, catalog())
	same, differ := true, false
	for i := 0; i < 100; i++ {
		ea, eb, ec := a.Next(), b.Next(), c.Next()
		same = same && reflect.DeepEqual(ea, eb)
		differ = differ || !reflect.DeepEqual(ea, ec)
	}
	if !same || !differ {
		t.Fatalf("same seed same events: %v; other seed differs: %v", same, differ)
	}
}

// Every malformed kind is rejected by the worker's decoder with the reason it is named after.
func TestBadEventsRejectedWithTheirReason(t *testing.T) {
	g, err := produce.NewGenerator(produce.GenConfig{Seed: 3, BadRatio: 1}, catalog())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[produce.BadKind]int{}
	for i := 0; i < 400; i++ {
		ev := g.Next()
		if ev.Bad == "" {
			t.Fatal("well-formed event with bad-ratio 1")
		}
		_, err := worker.Decode(ev.Data, limits)
		var de *worker.DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("%s event accepted or not a DecodeError (%v):\n%s", ev.Bad, err, ev.Data)
		}
		if string(de.Reason) != string(ev.Bad) {
			t.Fatalf("%s event rejected as %s: %v", ev.Bad, de.Reason, err)
		}
		seen[ev.Bad]++
	}
	for _, k := range produce.BadKinds {
		if seen[k] == 0 {
			t.Errorf("kind %s never generated", k)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  produce.Config
		want string
	}{
		{produce.Config{Stream: "", Rate: 1, Count: 1}, "stream"},
		{produce.Config{Stream: "s", Rate: 0, Count: 1}, "rate"},
		{produce.Config{Stream: "s", Rate: 1}, "count"},
		{produce.Config{Stream: "s", Rate: 1, Count: -1}, "count"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want error about %s", tc.cfg, err, tc.want)
		}
	}
	if _, err := produce.NewGenerator(produce.GenConfig{BadRatio: 2}, catalog()); err == nil {
		t.Error("bad ratio 2 accepted")
	}
	if _, err := produce.NewGenerator(produce.GenConfig{}, produce.Catalog{}); err == nil {
		t.Error("empty catalog accepted")
	}
}

// The producer honours --rate within 10% over 20 s against real kinesalite, and every record it
// reports as sent is on the stream.
func TestRateHonouredOnRealStream(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s rate test skipped with -short (CI runs it)")
	}
	stacktest.SetAWSEnv(t)
	ctx := context.Background()
	client, err := awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: "x", Shards: 1, Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "kinesis")})
	if err != nil {
		t.Fatal(err)
	}
	stream := stacktest.UniqueName("produce-test-")
	if _, err := client.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(stream), ShardCount: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = client.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	})
	waitActive(t, client, stream)

	g, _ := produce.NewGenerator(produce.GenConfig{Seed: 11, BadRatio: 0.1}, catalog())
	const rate, dur = 40.0, 20 * time.Second
	p, err := produce.New(produce.Config{Stream: stream, Rate: rate, Duration: dur}, g, client, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := rate * dur.Seconds()
	if float64(st.Sent) < want*0.9 || float64(st.Sent) > want*1.1 {
		t.Fatalf("sent %d events in %s at rate %g, want %g ±10%%", st.Sent, st.Elapsed, rate, want)
	}
	if st.Elapsed < dur || st.Elapsed > dur+5*time.Second {
		t.Fatalf("run took %s, want about %s", st.Elapsed, dur)
	}
	bad := 0
	for _, n := range st.Bad {
		bad += n
	}
	if bad == 0 {
		t.Fatal("no malformed events at bad-ratio 0.1")
	}
	if got := countRecords(t, client, stream); got != st.Sent {
		t.Fatalf("stream holds %d records, producer reported %d", got, st.Sent)
	}
}

func waitActive(t *testing.T, c *kinesis.Client, stream string) {
	t.Helper()
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		out, err := c.DescribeStreamSummary(context.Background(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
	}, "stream %s not ACTIVE", stream)
}

func countRecords(t *testing.T, c *kinesis.Client, stream string) int {
	t.Helper()
	ctx := context.Background()
	shards, err := c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, sh := range shards.Shards {
		it, err := c.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for iter != nil {
			out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
			if err != nil {
				t.Fatal(err)
			}
			total += len(out.Records)
			if len(out.Records) == 0 { // kinesalite returns everything up to the tip at once
				break
			}
			iter = out.NextShardIterator
		}
	}
	return total
}
