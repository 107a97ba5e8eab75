package inference_test

import (
	"context"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train/traintest"
)

// A batch whose users repeat asks the index once per distinct feature tuple, and every user
// still gets the answer for its own features, in order.
func TestServiceQueriesDistinctUsersOnce(t *testing.T) {
	store, _ := traintest.DirStore(t)
	v, _ := publishSynthetic(t, store, 0)
	idx := &fakeIndex{live: v}
	svc, err := inference.NewService(inference.DefaultConfig(), store, idx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	a := inference.UserFeatures{City: "city1", Country: "c0", CreditLimit: 3000}
	b := inference.UserFeatures{City: "city2", Country: "c1", CreditLimit: 90000}
	c := inference.UserFeatures{City: "city1", Country: "c0", CreditLimit: 3001} // differs from a only in the limit
	users := []inference.UserFeatures{a, b, a, c, b, a}
	got, err := svc.Recommend(ctx, users, nil, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.userEmbs) != 1 || len(idx.userEmbs[0]) != 3 {
		t.Fatalf("index asked for %d batches, first of %d users; want one batch of the 3 distinct users", len(idx.userEmbs), len(idx.userEmbs[0]))
	}
	if len(got.Recommended) != len(users) {
		t.Fatalf("%d answers for %d users", len(got.Recommended), len(users))
	}
	for i, u := range users {
		// The fake index scores with the embedding's first value, so each answer identifies the
		// embedding it was computed from.
		want := float64(svc.Model().UserEmbedding(u)[0])
		if s := got.Recommended[i][0].Score; s != want {
			t.Errorf("user %d (%+v): score %v, want %v from its own embedding", i, u, s, want)
		}
	}
}
