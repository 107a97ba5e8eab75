package inference_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/recstream/recstream/batch/embeddings"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// published is one trained and published artifacts version with everything a brute-force
// search needs.
type published struct {
	version string
	model   *inference.Model
	res     *train.TrainResult
	items   map[string][]float32 // from the published item_embeddings.csv
	ids     []string
}

func trainAndPublish(t *testing.T, store objstore.Store, ex []train.Example, cfg inference.TrainConfig) published {
	t.Helper()
	ctx := context.Background()
	res, err := train.Train(ctx, ex, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := train.Publish(ctx, store, res, cfg, inference.ModelCard{Created: time.Now().UTC(), Source: "e2e test"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := inference.LoadModel(ctx, store, v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := objstore.ReadAll(ctx, store, artifacts.Key(v, artifacts.ItemEmbeddingsKey))
	if err != nil {
		t.Fatal(err)
	}
	p := published{version: v, model: m, res: res, items: map[string][]float32{}}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n")[1:] {
		id, rest, _ := strings.Cut(line, `,"[`)
		var vec []float32
		for _, f := range strings.Split(strings.TrimSuffix(rest, `]"`), ",") {
			x, err := strconv.ParseFloat(f, 32)
			if err != nil {
				t.Fatalf("item csv %q: %v", line, err)
			}
			vec = append(vec, float32(x))
		}
		p.items[id] = vec
		p.ids = append(p.ids, id)
	}
	return p
}

// bruteUser is the exact top k by inner product over the published item embeddings.
func (p published) bruteUser(emb []float32, k int) []string {
	ids := slices.Clone(p.ids)
	sort.SliceStable(ids, func(a, b int) bool { return dot(emb, p.items[ids[a]]) > dot(emb, p.items[ids[b]]) })
	return ids[:k]
}

// bruteItem is the exact top k by cosine distance, the item itself excluded.
func (p published) bruteItem(code string, k int) []string {
	var ids []string
	for _, id := range p.ids {
		if id != code {
			ids = append(ids, id)
		}
	}
	q := p.items[code]
	sort.SliceStable(ids, func(a, b int) bool { return cosDist(q, p.items[ids[a]]) < cosDist(q, p.items[ids[b]]) })
	return ids[:k]
}

func artifactsStore(t *testing.T) objstore.Store {
	t.Helper()
	return stacktest.S3Store(t, "artifacts", "test-train-")
}

// TestEndToEndTrainPublishLoadQuery: train on the real data → publish to the S3 gateway →
// the `batch embeddings` loader (latest pointer) → ItemsFromUser / ItemsFromItem return k valid
// product codes in the order of a brute-force search over the published embeddings. Then a
// second version is published and loaded while Recommend runs in a loop: the Service switches
// without a failed request, and every answer matches the brute force of the version it names.
func TestEndToEndTrainPublishLoadQuery(t *testing.T) {
	ex := traintest.LabExamples(t)
	store := artifactsStore(t)
	cfg := testSchema(t, 100)
	pool := connect(t, cfg)
	idx := newIndex(t, pool, cfg)
	ctx := context.Background()
	loader, err := embeddings.NewLoader(pool, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	loadLatest := func() string {
		src, err := embeddings.ResolveArtifactsVersion(ctx, store, "latest")
		if err != nil {
			t.Fatal(err)
		}
		res, err := loader.Load(ctx, src, false)
		if err != nil {
			t.Fatal(err)
		}
		return res.Version
	}

	v1 := trainAndPublish(t, store, ex, inference.DefaultConfig().Train)
	if got := loadLatest(); got != v1.version {
		t.Fatalf("loaded embeddings version %q, want the artifacts version %q", got, v1.version)
	}
	const k = 5
	users := make([]inference.UserFeatures, len(v1.res.Users))
	for i, u := range v1.res.Users {
		users[i] = u.Features
	}
	embs := v1.model.UserEmbeddings(users)
	got, err := idx.ItemsFromUsers(ctx, embs, k)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		ids := make([]string, len(r))
		for j, it := range r {
			ids[j] = it.ID
			if want := dot(embs[i], v1.items[it.ID]); fmt.Sprintf("%.5f", it.Score) != fmt.Sprintf("%.5f", want) {
				t.Fatalf("user %d item %s: score %g, want %g", v1.res.Users[i].CustomerNumber, it.ID, it.Score, want)
			}
		}
		if want := v1.bruteUser(embs[i], k); !slices.Equal(ids, want) {
			t.Fatalf("user %d: ItemsFromUsers %v, brute force %v", v1.res.Users[i].CustomerNumber, ids, want)
		}
	}
	for _, code := range v1.ids {
		r, err := idx.ItemsFromItem(ctx, code, k)
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(r))
		for j, it := range r {
			ids[j] = it.ID
		}
		if want := v1.bruteItem(code, k); !slices.Equal(ids, want) {
			t.Fatalf("item %s: ItemsFromItem %v, brute force %v", code, ids, want)
		}
	}
	if _, err := idx.ItemsFromItem(ctx, "S99_0000", k); !errors.Is(err, inference.ErrItemNotFound) {
		t.Fatalf("unknown item: err = %v, want ErrItemNotFound", err)
	}

	// Hot reload.
	svcCfg := inference.DefaultConfig()
	svcCfg.ReloadInterval = 100 * time.Millisecond
	svc, err := inference.NewService(svcCfg, store, idx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- svc.Run(runCtx) }()
	stacktest.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool { return svc.Version() == v1.version }, "service never served %s", v1.version)

	cfg2 := inference.DefaultConfig().Train
	cfg2.Seed, cfg2.Epochs = 7, 2
	v2 := trainAndPublish(t, store, ex, cfg2)
	if v2.version == v1.version {
		t.Fatal("second model has the first one's version")
	}
	byVersion := map[string]published{v1.version: v1, v2.version: v2}
	browsed := []string{v1.ids[0], "", "S99_0000", v1.ids[5]}
	sample := users[:20]
	var requests, failures atomic.Int64
	var seen sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			res, err := svc.Recommend(ctx, sample, browsed, k)
			requests.Add(1)
			if err != nil {
				failures.Add(1)
				t.Errorf("recommend: %v", err)
				continue
			}
			p, ok := byVersion[res.ModelVersion]
			if !ok {
				t.Errorf("answer from unknown version %q", res.ModelVersion)
				continue
			}
			seen.Store(res.ModelVersion, true)
			uembs := p.model.UserEmbeddings(sample)
			for i, r := range res.Recommended {
				ids := make([]string, len(r))
				for j, it := range r {
					ids[j] = it.ID
				}
				if want := p.bruteUser(uembs[i], k); !slices.Equal(ids, want) {
					t.Errorf("version %s user %d: %v, brute force %v (model and embeddings mismatched?)", res.ModelVersion, i, ids, want)
				}
			}
			if res.Similar[1] != nil || res.Similar[2] != nil || len(res.Similar[0]) != k || len(res.Similar[3]) != k {
				t.Errorf("similar items: %v", res.Similar)
			}
			if ids := []string{res.Similar[0][0].ID}; ids[0] != p.bruteItem(browsed[0], k)[0] {
				t.Errorf("version %s: similar to %s starts with %s, brute force %s", res.ModelVersion, browsed[0], ids[0], p.bruteItem(browsed[0], k)[0])
			}
		}
	}()
	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool { return requests.Load() > 5 }, "no requests answered")
	if got := loadLatest(); got != v2.version {
		t.Fatalf("loaded %q, want %q", got, v2.version)
	}
	stacktest.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		_, ok := seen.Load(v2.version)
		return ok && svc.Version() == v2.version
	}, "service never switched to %s", v2.version)
	close(stop)
	wg.Wait()
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d batches answered across the reload, %d failed", requests.Load(), failures.Load())
	if failures.Load() != 0 {
		t.Fatalf("%d failed requests", failures.Load())
	}
}
