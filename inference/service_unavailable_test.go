package inference_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/recstream/recstream/batch/embeddings"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// countingIndex counts the live-version reads, so a test can wait for reload checks to happen.
type countingIndex struct {
	inference.Index
	live atomic.Int64
}

func (c *countingIndex) LiveVersion(ctx context.Context) (string, error) {
	c.live.Add(1)
	return c.Index.LiveVersion(ctx)
}

// mismatches records what the service's mismatch observer was told.
type mismatches struct {
	mu    sync.Mutex
	calls []bool
}

func (m *mismatches) observe(v bool) { m.mu.Lock(); m.calls = append(m.calls, v); m.mu.Unlock() }
func (m *mismatches) get() []bool    { m.mu.Lock(); defer m.mu.Unlock(); return slices.Clone(m.calls) }

// TestServiceLiveVersionWithoutModelRecovers, over the real stack (S3 gateway artifacts,
// PostgreSQL + pgvector): the service serves version A; then the embeddings of a version B
// whose model is not in the artifacts bucket are swapped in (`batch embeddings
// --without-model`). With no traffic the reload check turns Health red naming B; Recommend
// fails with ErrModelUnavailable instead of answering A's user embeddings against B's items;
// one error line, not one per check or batch. When the trainer publishes B's model, the service
// recovers by itself and answers from B, matching a brute-force search over B's embeddings.
func TestServiceLiveVersionWithoutModelRecovers(t *testing.T) {
	ex := traintest.LabExamples(t)
	arts := artifactsStore(t)
	staging, err := objstore.Open("file://"+t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testSchema(t, 100)
	pool := connect(t, cfg)
	ctx := context.Background()
	loader, err := embeddings.NewLoader(pool, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}

	tcfg := inference.DefaultConfig().Train
	tcfg.Epochs = 1
	a := trainAndPublish(t, arts, ex, tcfg)
	src, err := embeddings.ResolveArtifactsVersion(ctx, arts, artifacts.LatestName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loader.Load(ctx, src, false); err != nil {
		t.Fatal(err)
	}
	// B is trained and published elsewhere: its model is not in the artifacts bucket.
	tcfgB := tcfg
	tcfgB.Seed = 7
	b := trainAndPublish(t, staging, ex, tcfgB)
	if b.version == a.version {
		t.Fatal("B has A's version")
	}

	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	idx := &countingIndex{Index: newIndex(t, pool, cfg)}
	scfg := inference.DefaultConfig()
	scfg.ReloadInterval = 50 * time.Millisecond
	svc, err := inference.NewService(scfg, arts, idx, log)
	if err != nil {
		t.Fatal(err)
	}
	var seen mismatches
	svc.SetMismatchObserver(seen.observe)
	runCtx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- svc.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Error(err)
		}
	}()
	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool { return svc.Version() == a.version }, "service never served %s", a.version)
	if err := svc.Health(); err != nil {
		t.Fatalf("Health serving A = %v", err)
	}
	users := make([]inference.UserFeatures, 10)
	for i := range users {
		users[i] = b.res.Users[i].Features
	}
	if r, err := svc.Recommend(ctx, users, nil, 5); err != nil || r.ModelVersion != a.version {
		t.Fatalf("Recommend serving A: %s, %v", r.ModelVersion, err)
	}

	// B's embeddings go live without B's model.
	if _, err := loader.Load(ctx, embeddings.Source{Store: staging, Prefix: artifacts.VersionPrefix(b.version), Version: b.version, WithoutModel: true}, false); err != nil {
		t.Fatal(err)
	}
	// No traffic: the reload check alone turns readiness red.
	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool { return svc.Health() != nil }, "Health stayed nil with live version %s and no model", b.version)
	h := svc.Health()
	if !errors.Is(h, inference.ErrModelUnavailable) || !strings.Contains(h.Error(), b.version) || !strings.Contains(h.Error(), a.version) {
		t.Fatalf("Health = %v, want ErrModelUnavailable naming %s and %s", h, b.version, a.version)
	}
	if got := seen.get(); !slices.Equal(got, []bool{false, true}) {
		t.Fatalf("observer calls %v, want [false true]", got)
	}
	for i := 0; i < 5; i++ {
		r, err := svc.Recommend(ctx, users, []string{b.ids[0]}, 5)
		if !errors.Is(err, inference.ErrModelUnavailable) {
			t.Fatalf("Recommend with live %s and no model: version %q, %v; want ErrModelUnavailable", b.version, r.ModelVersion, err)
		}
	}
	if svc.Version() != a.version {
		t.Fatalf("served %s, want %s kept loaded", svc.Version(), a.version)
	}
	// Several more reload checks, still one error line.
	n := idx.live.Load()
	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool { return idx.live.Load() >= n+5 }, "no reload checks")
	if errs := logs.FilterLevelExact(zapcore.ErrorLevel).All(); len(errs) != 1 ||
		errs[0].ContextMap()["live_version"] != b.version || errs[0].ContextMap()["version"] != a.version || errs[0].ContextMap()["error"] == nil {
		t.Fatalf("error lines %+v, want one with version, live_version and error", errs)
	}

	// The trainer publishes B's model (same content, same version): the service recovers.
	if v, err := train.Publish(ctx, arts, b.res, tcfgB, inference.ModelCard{Created: time.Now().UTC(), Source: "late publish"}); err != nil || v != b.version {
		t.Fatalf("publish B: %s, %v", v, err)
	}
	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool { return svc.Health() == nil }, "Health never recovered after B's model was published: %v", svc.Health())
	if got := seen.get(); !slices.Equal(got, []bool{false, true, false}) {
		t.Fatalf("observer calls %v, want [false true false]", got)
	}
	r, err := svc.Recommend(ctx, users, nil, 5)
	if err != nil || r.ModelVersion != b.version {
		t.Fatalf("Recommend after recovery: %q, %v", r.ModelVersion, err)
	}
	embs := b.model.UserEmbeddings(users)
	for i, rec := range r.Recommended {
		ids := make([]string, len(rec))
		for j, it := range rec {
			ids[j] = it.ID
		}
		if want := b.bruteUser(embs[i], 5); !slices.Equal(ids, want) {
			t.Fatalf("user %d: %v, brute force over B %v", i, ids, want)
		}
	}
	if infos := logs.FilterMessageSnippet("available again").All(); len(infos) != 1 || infos[0].Level != zapcore.InfoLevel {
		t.Fatalf("recovery lines %+v, want one at info level", infos)
	}
}
