package stacktest_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

// The local stack answers over each real protocol with the versions the project depends on.
func TestStackSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stacktest.SetAWSEnv(t)

	t.Run("mysql ping", func(t *testing.T) {
		stacktest.MySQLAddr(t)
		mc, err := mysql.ParseDSN(stacktest.Value(t, "mysql.dsn"))
		if err != nil {
			t.Fatal(err)
		}
		mc.Passwd = stacktest.DBPassword("RECSTREAM_MYSQL_PASSWORD")
		db, err := sql.Open("mysql", mc.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.PingContext(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
	})

	t.Run("postgres pgvector 0.8.0", func(t *testing.T) {
		stacktest.Require(t, "PostgreSQL", "127.0.0.1:5432")
		cc, err := pgx.ParseConfig(stacktest.Value(t, "postgres.dsn"))
		if err != nil {
			t.Fatal(err)
		}
		cc.Password = stacktest.DBPassword("RECSTREAM_POSTGRES_PASSWORD")
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v string
		if err := conn.QueryRow(ctx, "SELECT extversion FROM pg_extension WHERE extname='vector'").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != "0.8.0" {
			t.Fatalf("pgvector version %q, want 0.8.0", v)
		}
	})

	t.Run("kinesis DescribeStreamSummary", func(t *testing.T) {
		c, err := awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: "x", Shards: 1, Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "kinesis")})
		if err != nil {
			t.Fatal(err)
		}
		stream := stacktest.Value(t, "kinesis.stream")
		out, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
		if err != nil {
			t.Fatalf("describe %s: %v", stream, err)
		}
		if got := aws.ToInt32(out.StreamDescriptionSummary.OpenShardCount); got < 1 {
			t.Fatalf("open shards = %d", got)
		}
	})

	t.Run("dynamodb ListTables", func(t *testing.T) {
		c, err := awsenv.DynamoDB(ctx, awsenv.DynamoDBConfig{LeaseTable: "x", Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "dynamodb")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ListTables(ctx, &dynamodb.ListTablesInput{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("s3 ListBuckets", func(t *testing.T) {
		c, err := awsenv.S3(ctx, awsenv.S3Config{Endpoint: stacktest.Endpoint(t, "s3"), Region: "us-east-1", PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, b := range out.Buckets {
			names = append(names, aws.ToString(b.Name))
		}
		for _, want := range []string{"datalake", "artifacts", "recommendations"} {
			bucket := strings.TrimPrefix(stacktest.Value(t, "s3.buckets."+want), "s3://")
			found := false
			for _, n := range names {
				found = found || n == bucket
			}
			if !found {
				t.Errorf("bucket %s missing; have %v", bucket, names)
			}
		}
	})
}

// TestEmulatorsSurviveAbortedRequests: a client that drops its connection halfway through
// sending a request (a cancelled context, a fault proxy's reset) must not take the emulator
// down for everyone else, as it does unguarded (scripts/abort-guard.js).
func TestEmulatorsSurviveAbortedRequests(t *testing.T) {
	for _, svc := range []struct{ section, target string }{
		{"dynamodb", "DynamoDB_20120810.ListTables"},
		{"kinesis", "Kinesis_20131202.ListStreams"},
	} {
		t.Run(svc.section, func(t *testing.T) {
			endpoint := stacktest.Endpoint(t, svc.section)
			addr := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
			stacktest.Require(t, svc.section, addr)
			for i := 0; i < 3; i++ {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					t.Fatalf("dial %s: %v", addr, err)
				}
				fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: %s\r\nContent-Length: 100\r\n\r\n{\"Li", addr, svc.target)
				// Wait until the server has read the partial body, then reset the connection.
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, _ = c.Read(make([]byte, 1))
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
			}
			stacktest.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
				req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader("{}"))
				req.Header.Set("Content-Type", "application/x-amz-json-1.1")
				req.Header.Set("X-Amz-Target", svc.target)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return false
				}
				resp.Body.Close()
				return true
			}, "%s does not answer after aborted requests", svc.section)
		})
	}
}
