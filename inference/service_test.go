package inference_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
	"github.com/recstream/recstream/internal/objstore"
)

// fakeIndex is a fake at our own seam (Index): it answers from fixed lists, counts calls, and
// can swap the "live" version during a query, like a concurrent `batch embeddings`.
type fakeIndex struct {
	mu          sync.Mutex
	live        string
	swapTo      string // if set, the next ItemsFromUsers makes it live mid-query
	userEmbs    [][][]float32
	itemQueries [][]string
}

func (f *fakeIndex) ItemsFromUsers(_ context.Context, embs [][]float32, k int) ([][]inference.ScoredItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.userEmbs = append(f.userEmbs, embs)
	if f.swapTo != "" {
		f.live, f.swapTo = f.swapTo, ""
	}
	out := make([][]inference.ScoredItem, len(embs))
	for i := range out {
		out[i] = []inference.ScoredItem{{ID: "from-" + f.live, Score: float64(embs[i][0])}}
	}
	return out, nil
}

func (f *fakeIndex) ItemsFromItems(_ context.Context, codes []string, k int) (map[string][]inference.SimilarItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.itemQueries = append(f.itemQueries, codes)
	out := map[string][]inference.SimilarItem{}
	for _, c := range codes {
		if c != "unknown" {
			out[c] = []inference.SimilarItem{{ID: c + "-near-" + f.live}}
		}
	}
	return out, nil
}

func (f *fakeIndex) LiveVersion(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live, nil
}

func syntheticExamples() []train.Example {
	var ex []train.Example
	for c := 0; c < 12; c++ {
		for p := 0; p < 8; p++ {
			ex = append(ex, train.Example{CustomerNumber: int64(100 + c), ProductCode: fmt.Sprintf("S%d", p),
				User:   inference.UserFeatures{City: fmt.Sprint("city", c%4), Country: fmt.Sprint("c", c%2), CreditLimit: float64(c * 1000)},
				Item:   inference.ItemFeatures{ProductLine: fmt.Sprint("line", p%3), ProductScale: "1:10", QuantityInStock: float64(p), BuyPrice: float64(10 + p), MSRP: float64(20 + p)},
				Rating: float64(1 + (c+p)%5)})
		}
	}
	return ex
}

// publishSynthetic trains a one-epoch model on syntheticExamples (seed 0: the config's) and
// publishes it to store; it returns the version and the model.
func publishSynthetic(t *testing.T, store objstore.Store, seed int64) (string, *inference.Model) {
	t.Helper()
	cfg := inference.DefaultConfig().Train
	cfg.Epochs = 1
	if seed != 0 {
		cfg.Seed = seed
	}
	res, err := train.Train(context.Background(), syntheticExamples(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := train.Publish(context.Background(), store, res, cfg, inference.ModelCard{})
	if err != nil {
		t.Fatal(err)
	}
	return v, res.Model
}

func TestServiceSwitchesMidBatchAndCachesPerVersion(t *testing.T) {
	store, _ := traintest.DirStore(t)
	var versions []string
	var models []*inference.Model
	for seed := int64(1); seed <= 2; seed++ {
		v, m := publishSynthetic(t, store, seed)
		versions, models = append(versions, v), append(models, m)
	}
	idx := &fakeIndex{live: versions[0]}
	svc, err := inference.NewService(inference.DefaultConfig(), store, idx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := svc.Recommend(ctx, nil, nil, 5); err != inference.ErrNotLoaded {
		t.Fatalf("before Load: err = %v, want ErrNotLoaded", err)
	}
	if err := svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	users := []inference.UserFeatures{{City: "city1", Country: "c0", CreditLimit: 3000}}
	items := []string{"S1", "", "unknown", "S1"}
	res, err := svc.Recommend(ctx, users, items, 5)
	if err != nil {
		t.Fatal(err)
	}
	if res.ModelVersion != versions[0] || res.Recommended[0][0].ID != "from-"+versions[0] {
		t.Fatalf("first batch: %+v", res)
	}
	if res.Similar[0][0].ID != "S1-near-"+versions[0] || res.Similar[1] != nil || res.Similar[2] != nil || res.Similar[3][0] != res.Similar[0][0] {
		t.Fatalf("similar: %+v", res.Similar)
	}
	// Cached: a second batch asks the index nothing about items.
	if _, err := svc.Recommend(ctx, users, items, 5); err != nil || len(idx.itemQueries) != 1 || !slices.Equal(idx.itemQueries[0], []string{"S1", "unknown"}) {
		t.Fatalf("item queries %v (err %v), want one query for [S1 unknown]", idx.itemQueries, err)
	}

	// A new version goes live while the batch's user query runs: the batch is redone with the
	// new model and answered from the new version, without an error.
	idx.swapTo = versions[1]
	res, err = svc.Recommend(ctx, users, items, 5)
	if err != nil {
		t.Fatal(err)
	}
	if res.ModelVersion != versions[1] || svc.Version() != versions[1] || res.Recommended[0][0].ID != "from-"+versions[1] {
		t.Fatalf("after swap: version %s, service %s, %+v", res.ModelVersion, svc.Version(), res.Recommended)
	}
	last := idx.userEmbs[len(idx.userEmbs)-1][0]
	if want := models[1].UserEmbedding(users[0]); !traintest.BitsEqual(last, want) {
		t.Fatal("the redone batch did not use the new model's user embedding")
	}
	if res.Similar[0][0].ID != "S1-near-"+versions[1] {
		t.Fatalf("similar items came from the old version's cache: %+v", res.Similar[0])
	}
}

func TestServicePinnedVersionRefusesOtherLiveVersion(t *testing.T) {
	store, _ := traintest.DirStore(t)
	cfg := inference.DefaultConfig()
	cfg.ArtifactsVersion = "m-0123456789ab"
	svc, err := inference.NewService(cfg, store, &fakeIndex{live: "m-ba9876543210"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Load(context.Background()); err == nil || !strings.Contains(err.Error(), "is not the pinned artifacts version m-0123456789ab") {
		t.Fatalf("err = %v", err)
	}
}

// observed records what a mismatch observer was told, in order.
type observed struct {
	mu    sync.Mutex
	calls []bool
}

func (o *observed) observe(m bool) { o.mu.Lock(); o.calls = append(o.calls, m); o.mu.Unlock() }

func (o *observed) get() []bool { o.mu.Lock(); defer o.mu.Unlock(); return slices.Clone(o.calls) }

// A live version without a model (here: no artifacts at all) is never answered from the
// current model: Recommend fails with ErrModelUnavailable without querying the index, Health
// names both versions, the observer hears each change once, a failed load is not retried per
// batch, and going back to a servable version clears the state.
func TestServiceLiveVersionWithoutModel(t *testing.T) {
	store, _ := traintest.DirStore(t)
	a, _ := publishSynthetic(t, store, 0)
	idx := &fakeIndex{live: a}
	svc, err := inference.NewService(inference.DefaultConfig(), store, idx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1e9, 0)
	svc.SetNow(func() time.Time { return clock })
	var obs observed
	svc.SetMismatchObserver(obs.observe)
	ctx := context.Background()
	if err := svc.Health(); !errors.Is(err, inference.ErrNotLoaded) {
		t.Fatalf("Health before Load = %v, want ErrNotLoaded", err)
	}
	if err := svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Health(); err != nil {
		t.Fatalf("Health = %v", err)
	}
	users := []inference.UserFeatures{{City: "city1", Country: "c0", CreditLimit: 3000}}

	const b = "sha-0123456789ab" // `batch embeddings --from DIR --without-model`
	idx.mu.Lock()
	idx.live = b
	idx.mu.Unlock()
	queries := func() int { idx.mu.Lock(); defer idx.mu.Unlock(); return len(idx.userEmbs) }
	before := queries()
	for i := 0; i < 3; i++ {
		r, err := svc.Recommend(ctx, users, []string{"S1"}, 5)
		if !errors.Is(err, inference.ErrModelUnavailable) || !strings.Contains(err.Error(), b) {
			t.Fatalf("Recommend with live %s: %+v, %v; want ErrModelUnavailable naming it", b, r, err)
		}
	}
	// The first batch queried before it saw the new version (and threw the answer away);
	// later ones are refused up front.
	if q := queries() - before; q != 1 {
		t.Fatalf("%d index queries while unavailable, want 1", q)
	}
	if svc.Version() != a {
		t.Fatalf("served version %s, want %s kept loaded", svc.Version(), a)
	}
	h := svc.Health()
	if !errors.Is(h, inference.ErrModelUnavailable) || !strings.Contains(h.Error(), a) || !strings.Contains(h.Error(), b) || !strings.Contains(h.Error(), "does not exist") {
		t.Fatalf("Health = %v, want ErrModelUnavailable naming %s, %s and the reason", h, a, b)
	}
	if got := obs.get(); !slices.Equal(got, []bool{false, true}) {
		t.Fatalf("observer calls %v, want [false true]", got)
	}
	// The failed load is remembered for inference.RetryLoadAfter (Recommend does not read the artifacts
	// again); the reload check always retries.
	at := svc.FailedAt(b)
	clock = clock.Add(inference.RetryLoadAfter / 2)
	if _, err := svc.Recommend(ctx, users, nil, 5); !errors.Is(err, inference.ErrModelUnavailable) {
		t.Fatal(err)
	}
	again := svc.FailedAt(b)
	if !again.Equal(at) {
		t.Fatal("Recommend retried the failed load before inference.RetryLoadAfter")
	}
	if err := svc.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	again = svc.FailedAt(b)
	if !again.After(at) {
		t.Fatal("the reload check did not retry the failed load")
	}

	// Rolled back: the served version is live again.
	idx.mu.Lock()
	idx.live = a
	idx.mu.Unlock()
	r, err := svc.Recommend(ctx, users, nil, 5)
	if err != nil || r.ModelVersion != a {
		t.Fatalf("after rollback: %+v, %v", r, err)
	}
	if err := svc.Health(); err != nil {
		t.Fatalf("Health after rollback = %v", err)
	}
	if got := obs.get(); !slices.Equal(got, []bool{false, true, false}) {
		t.Fatalf("observer calls %v, want [false true false]", got)
	}
}

// A pinned service whose live version is another one is in the same state: refused, red.
func TestServicePinnedVersionMismatchIsUnavailable(t *testing.T) {
	store, _ := traintest.DirStore(t)
	a, _ := publishSynthetic(t, store, 0)
	scfg := inference.DefaultConfig()
	scfg.ArtifactsVersion = a
	idx := &fakeIndex{live: a}
	svc, err := inference.NewService(scfg, store, idx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	idx.mu.Lock()
	idx.live = "m-ba9876543210"
	idx.mu.Unlock()
	if err := svc.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := svc.Health(); !errors.Is(h, inference.ErrModelUnavailable) || !strings.Contains(h.Error(), "is not the pinned artifacts version "+a) {
		t.Fatalf("Health = %v", h)
	}
	if _, err := svc.Recommend(context.Background(), nil, []string{"S1"}, 5); !errors.Is(err, inference.ErrModelUnavailable) {
		t.Fatalf("Recommend = %v, want ErrModelUnavailable", err)
	}
}
