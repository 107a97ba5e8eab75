package faults

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/jackc/pgx/v5"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

func newProxy(t *testing.T, s Service, seed uint64) *HTTPProxy {
	t.Helper()
	p, err := NewHTTP(s, stacktest.Endpoint(t, string(s)), seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Clients without SDK retries, so each call is one request and meets one fault.
func kinesisVia(t *testing.T, p *HTTPProxy) *kinesis.Client {
	t.Helper()
	stacktest.SetAWSEnv(t)
	c, err := awsenv.Kinesis(context.Background(), awsenv.KinesisConfig{Stream: "x", Shards: 1, Region: "us-east-1", Endpoint: p.URL()},
		func(c *aws.Config) { c.Retryer = func() aws.Retryer { return aws.NopRetryer{} } })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dynamoVia(t *testing.T, p *HTTPProxy) *dynamodb.Client {
	t.Helper()
	stacktest.SetAWSEnv(t)
	c, err := awsenv.DynamoDB(context.Background(), awsenv.DynamoDBConfig{LeaseTable: "x", Region: "us-east-1", Endpoint: p.URL()},
		func(c *aws.Config) { c.Retryer = func() aws.Retryer { return aws.NopRetryer{} } })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func s3Via(t *testing.T, p *HTTPProxy) *s3.Client {
	t.Helper()
	stacktest.SetAWSEnv(t)
	c, err := awsenv.S3(context.Background(), awsenv.S3Config{Endpoint: p.URL(), Region: "us-east-1", PathStyle: true},
		func(c *aws.Config) { c.Retryer = func() aws.Retryer { return aws.NopRetryer{} } })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestErrorShapesParseAsSDKErrors: every error answer reaches the SDK as the typed error (or
// error code) and HTTP status the real service gives, and the connection-level faults show as
// transport errors, not API errors.
func TestErrorShapesParseAsSDKErrors(t *testing.T) {
	ctx := context.Background()
	kp := newProxy(t, Kinesis, 1)
	kc := kinesisVia(t, kp)
	dp := newProxy(t, DynamoDB, 1)
	dc := dynamoVia(t, dp)
	sp := newProxy(t, S3, 1)
	sc := s3Via(t, sp)

	listShards := func() error {
		_, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String("faults-none")})
		return err
	}
	getRecords := func() error {
		_, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("AAAA")})
		return err
	}
	describeTable := func() error {
		_, err := dc.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("faults-none")})
		return err
	}
	headBucket := func() error {
		_, err := sc.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(strings.TrimPrefix(stacktest.Value(t, "s3.buckets.recommendations"), "s3://"))})
		return err
	}
	getObject := func() error {
		_, err := sc.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(strings.TrimPrefix(stacktest.Value(t, "s3.buckets.recommendations"), "s3://")), Key: aws.String("faults-none")})
		return err
	}
	cases := []struct {
		proxy  *HTTPProxy
		kind   Kind
		call   func() error
		typed  func(error) bool
		code   string
		status int
	}{
		{kp, Throughput, listShards, func(err error) bool { var e *ktypes.ProvisionedThroughputExceededException; return errors.As(err, &e) }, "ProvisionedThroughputExceededException", 400},
		{kp, LimitExceeded, listShards, func(err error) bool { var e *ktypes.LimitExceededException; return errors.As(err, &e) }, "LimitExceededException", 400},
		{kp, ExpiredIterator, getRecords, func(err error) bool { var e *ktypes.ExpiredIteratorException; return errors.As(err, &e) }, "ExpiredIteratorException", 400},
		{kp, Internal, listShards, nil, "InternalFailure", 500},
		{dp, Throughput, describeTable, func(err error) bool { var e *dtypes.ProvisionedThroughputExceededException; return errors.As(err, &e) }, "ProvisionedThroughputExceededException", 400},
		{dp, Throttling, describeTable, nil, "ThrottlingException", 400},
		{dp, Internal, describeTable, func(err error) bool { var e *dtypes.InternalServerError; return errors.As(err, &e) }, "InternalServerError", 500},
		{sp, SlowDown, getObject, nil, "SlowDown", 503},
		{sp, Internal, getObject, nil, "InternalError", 500},
		{sp, Internal, headBucket, nil, "", 500}, // HEAD answers have no body: status only
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s", c.proxy.service, c.kind), func(t *testing.T) {
			c.proxy.ClearRates()
			c.proxy.SetRate(c.kind, 1)
			defer c.proxy.ClearRates()
			err := c.call()
			if err == nil {
				t.Fatal("no error")
			}
			if c.typed != nil && !c.typed(err) {
				t.Errorf("not the SDK's typed error: %T %v", err, err)
			}
			if c.code != "" && apiCode(err) != c.code {
				t.Errorf("error code %q, want %q (%v)", apiCode(err), c.code, err)
			}
			if got := status(err); got != c.status {
				t.Errorf("HTTP status %d, want %d (%v)", got, c.status, err)
			}
		})
	}

	// An expired iterator is only GetRecords' answer: other calls go through.
	kp.ClearRates()
	kp.SetRate(ExpiredIterator, 1)
	if err := listShards(); apiCode(err) != "ResourceNotFoundException" {
		t.Errorf("ListShards with expired-iterator faults on: %v, want the service's own ResourceNotFoundException", err)
	}
	kp.ClearRates()

	// Reset and blackout: a transport error, no API error; off again, the service answers.
	for _, on := range []func(){func() { dp.SetRate(Reset, 1) }, func() { dp.SetBlackout(true) }} {
		on()
		err := describeTable()
		if err == nil || apiCode(err) != "" || status(err) != 0 {
			t.Errorf("reset/blackout: %v, want a connection error", err)
		}
		dp.ClearRates()
		dp.SetBlackout(false)
		if err := describeTable(); apiCode(err) != "ResourceNotFoundException" {
			t.Errorf("after the fault: %v, want the service's answer", err)
		}
	}

	// Slow: the service's own answer, late.
	dp.SetRate(Slow, 1)
	t0 := time.Now()
	err := describeTable()
	if d := time.Since(t0); d < SlowMin || apiCode(err) != "ResourceNotFoundException" {
		t.Errorf("slow answer after %s: %v", d, err)
	}
	dp.ClearRates()
	counts, reqs := dp.Counts()
	if counts[Throughput] != 1 || counts[Throttling] != 1 || counts[Reset] != 1 || counts[Blackout] != 1 || counts[Slow] != 1 || reqs < 8 {
		t.Errorf("dynamodb counts %v over %d requests", counts, reqs)
	}
}

// TestLostAnswerAfterTheServiceActed: a conditional DynamoDB write whose answer is lost has
// been applied: the caller sees a connection error, and its retry meets the condition failing
// against its own write (what a lease or checkpoint writer must recognise).
func TestLostAnswerAfterTheServiceActed(t *testing.T) {
	ctx := context.Background()
	dp := newProxy(t, DynamoDB, 2)
	dc := dynamoVia(t, dp)
	table := stacktest.UniqueName("faults-")
	if _, err := dc.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table),
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("k"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("k"), KeyType: dtypes.KeyTypeHash}},
		BillingMode:          dtypes.BillingModePayPerRequest}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = dc.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		out, err := dc.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		return err == nil && out.Table.TableStatus == dtypes.TableStatusActive
	}, "table %s not active", table)

	put := func() error {
		_, err := dc.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table),
			Item:                map[string]dtypes.AttributeValue{"k": &dtypes.AttributeValueMemberS{Value: "lease"}, "owner": &dtypes.AttributeValueMemberS{Value: "w1"}},
			ConditionExpression: aws.String("attribute_not_exists(k)")})
		return err
	}
	dp.SetRate(LostAnswer, 1)
	err := put()
	if err == nil || apiCode(err) != "" {
		t.Fatalf("lost answer: %v, want a connection error", err)
	}
	dp.ClearRates()
	out, err := dc.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: map[string]dtypes.AttributeValue{"k": &dtypes.AttributeValueMemberS{Value: "lease"}}, ConsistentRead: aws.Bool(true)})
	if err != nil || out.Item == nil {
		t.Fatalf("the write whose answer was lost was not applied: %v %v", out, err)
	}
	var ccf *dtypes.ConditionalCheckFailedException
	if err := put(); !errors.As(err, &ccf) {
		t.Fatalf("retry of the applied write: %v, want ConditionalCheckFailedException", err)
	}
}

// TestDrawsReproducible: the same seed and rates give the same faults for the same sequence of
// requests; another seed gives another sequence; rates are honoured roughly.
func TestDrawsReproducible(t *testing.T) {
	seq := func(seed uint64) []Kind {
		p := &HTTPProxy{service: Kinesis, rng: newRNG(seed, Kinesis), rates: map[Kind]float64{}, counts: map[Kind]int{}}
		p.SetRate(Throughput, 0.2)
		p.SetRate(Internal, 0.1)
		p.SetRate(ExpiredIterator, 0.1)
		var out []Kind
		for i := range 2000 {
			op := "PutRecords"
			if i%2 == 0 {
				op = "GetRecords"
			}
			k, d := p.draw(op)
			if k == Slow && (d < SlowMin || d > SlowMax) {
				t.Fatalf("slow delay %s", d)
			}
			out = append(out, k)
		}
		return out
	}
	a, b, c := seq(7), seq(7), seq(8)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different faults")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds, same faults")
	}
	n := map[Kind]int{}
	for _, k := range a {
		n[k]++
	}
	// Expired iterators only on GetRecords (half the requests).
	if n[Throughput] < 300 || n[Throughput] > 500 || n[Internal] < 120 || n[Internal] > 280 || n[ExpiredIterator] < 50 || n[ExpiredIterator] > 150 {
		t.Errorf("fault counts %v over 2000 requests", n)
	}
}

// TestTCPProxyCutAndBlackout over the real PostgreSQL: a cut breaks open connections and new
// ones work; a blackout refuses connections until it ends.
func TestTCPProxyCutAndBlackout(t *testing.T) {
	ctx := context.Background()
	cc, err := pgx.ParseConfig(stacktest.Value(t, "postgres.dsn"))
	if err != nil {
		t.Fatal(err)
	}
	target := fmt.Sprintf("%s:%d", cc.Host, cc.Port)
	stacktest.Require(t, "PostgreSQL", target)
	cc.Password = stacktest.DBPassword("RECSTREAM_POSTGRES_PASSWORD")
	p, err := NewTCP(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	host, port, _ := strings.Cut(p.Addr(), ":")
	cc.Host = host
	fmt.Sscan(port, &cc.Port)
	cc.ConnectTimeout = 3 * time.Second
	connect := func() (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cc.Copy()) }
	ping := func(c *pgx.Conn) error {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var one int
		return c.QueryRow(qctx, "SELECT 1").Scan(&one)
	}

	c1, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(c1); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if err := ping(c1); err == nil {
		t.Fatal("query on a cut connection succeeded")
	}
	c2, err := connect()
	if err != nil {
		t.Fatalf("connect after a cut: %v", err)
	}
	defer c2.Close(ctx)
	if err := ping(c2); err != nil {
		t.Fatal(err)
	}

	p.SetBlackout(true)
	if err := ping(c2); err == nil {
		t.Fatal("query during a blackout succeeded")
	}
	if c, err := connect(); err == nil {
		c.Close(ctx)
		t.Fatal("connected during a blackout")
	}
	p.SetBlackout(false)
	c3, err := connect()
	if err != nil {
		t.Fatalf("connect after the blackout: %v", err)
	}
	defer c3.Close(ctx)
	if err := ping(c3); err != nil {
		t.Fatal(err)
	}
	if got := p.Counts(); got[Cut] != 1 || got[Blackout] != 1 {
		t.Errorf("counts %v", got)
	}
}

// TestDynamoDBErrorsCarryCRC32: DynamoDB answers carry X-Amz-Crc32 of the body, which the SDK
// checks on every answer (without it the SDK warns about a checksum mismatch on each error).
func TestDynamoDBErrorsCarryCRC32(t *testing.T) {
	for _, k := range []Kind{Throughput, Throttling, Internal} {
		rec := httptest.NewRecorder()
		writeError(rec, DynamoDB, k)
		want := strconv.FormatUint(uint64(crc32.ChecksumIEEE(rec.Body.Bytes())), 10)
		if got := rec.Header().Get("X-Amz-Crc32"); got != want {
			t.Errorf("%s: X-Amz-Crc32 %q, want %q", k, got, want)
		}
	}
}
