package checkpoint

import (
	"context"
	"testing"

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
