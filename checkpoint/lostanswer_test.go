package checkpoint

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/faults"
	"github.com/recstream/recstream/internal/stacktest"
)

// TestClaimWhoseAnswerWasLost: the claimant's conditional write of its ClaimRequest is applied
// by DynamoDB but the answer is lost (connection reset after the service acted); the SDK's
// retry then fails the condition against the claimant's own write. The claim is ours and must
// be reported as made: otherwise the holder hands the shard over to a claimant that believes it
// failed (the soak saw the holder release and take the shard back, replaying its buffer).
func TestClaimWhoseAnswerWasLost(t *testing.T) {
	db, table := testTable(t)
	a := newStore(t, db, table, "worker-a", newFakeClock())
	mustLease(t, a, status("s0", ""))

	p, err := faults.NewHTTP(faults.DynamoDB, stacktest.Endpoint(t, "dynamodb"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	cdb, err := awsenv.DynamoDB(context.Background(), awsenv.DynamoDBConfig{LeaseTable: table, Region: "us-east-1", Endpoint: p.URL()})
	if err != nil {
		t.Fatal(err)
	}
	c := newStore(t, cdb, table, "worker-c", newFakeClock())

	p.Next(faults.LostAnswer, "UpdateItem")
	sc := status("s0", "")
	err = c.ClaimShard(sc, "worker-c")
	if counts, _ := p.Counts(); counts[faults.LostAnswer] != 1 {
		t.Fatalf("the claim's answer was not lost (faults %v)", counts)
	}
	if l := row(t, a, "s0"); l.ClaimRequest != "worker-c" || l.Owner != "worker-a" {
		t.Fatalf("row after the claim: owner %q claim %q, want worker-a claimed by worker-c", l.Owner, l.ClaimRequest)
	}
	if err != nil {
		t.Fatalf("claim applied but reported as failed: %v", err)
	}
	if sc.ClaimRequest != "worker-c" {
		t.Fatalf("shard status ClaimRequest %q, want worker-c", sc.ClaimRequest)
	}
}

// TestRenewalAfterLostAnswerAndFailedReRead: a renewal is applied but its answer is lost, the
// SDK's retry fails the condition against it, and the re-read that would show it is our own
// write fails too (DynamoDB unreachable for a moment). The lease is still ours: the next
// renewal must adopt our write and go on, not report the lease lost with ourselves as owner
// (the soak saw a worker drop its buffer and leave its own lease to expire, 10 s without
// progress on the shard).
func TestRenewalAfterLostAnswerAndFailedReRead(t *testing.T) {
	_, table := testTable(t)
	p, err := faults.NewHTTP(faults.DynamoDB, stacktest.Endpoint(t, "dynamodb"), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	// Once armed, an UpdateItem call cuts the store off from GetItem: the re-read fails.
	var armed, cut atomic.Bool
	reReadFails := func(c *aws.Config) {
		c.APIOptions = append(c.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("reReadFails",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					switch awsmiddleware.GetOperationName(ctx) {
					case "UpdateItem":
						if armed.Load() {
							cut.Store(true)
						}
					case "GetItem":
						if cut.Load() {
							return middleware.InitializeOutput{}, middleware.Metadata{}, errors.New("partitioned from DynamoDB")
						}
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.After)
		})
	}
	db, err := awsenv.DynamoDB(context.Background(), awsenv.DynamoDBConfig{LeaseTable: table, Region: "us-east-1", Endpoint: p.URL()}, reReadFails)
	if err != nil {
		t.Fatal(err)
	}
	a := newStore(t, db, table, "worker-a", newFakeClock())
	st := status("s0", "")
	mustLease(t, a, st)
	before := row(t, a, "s0").Counter

	armed.Store(true)
	p.Next(faults.LostAnswer, "UpdateItem")
	err = a.GetLease(st, "worker-a")
	if counts, _ := p.Counts(); counts[faults.LostAnswer] != 1 {
		t.Fatalf("the renewal's answer was not lost (faults %v)", counts)
	}
	armed.Store(false)
	cut.Store(false)
	if l := row(t, a, "s0"); l.Owner != "worker-a" || l.Counter != before+1 {
		t.Fatalf("row after the lost renewal: owner %q counter %d, want worker-a %d", l.Owner, l.Counter, before+1)
	}
	if err == nil || errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renewal whose re-read failed: %v, want a retryable error (not lease lost)", err)
	}
	if err := a.GetLease(st, "worker-a"); err != nil {
		t.Fatalf("next renewal of the lease we hold: %v (row %+v)", err, row(t, a, "s0"))
	}
	if _, ok := a.HeldUntil("s0"); !ok {
		t.Fatal("lease not held after the renewal")
	}
}
