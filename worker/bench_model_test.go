package worker

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/embeddings"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/internal/pgtest"
	"github.com/recstream/recstream/internal/stacktest"
	"github.com/recstream/recstream/produce"
)

// serviceRecommender adapts *inference.Service to Recommender exactly as cmd/recstream's
// `recommender` does (package main cannot be imported), and adds up the time spent in it.
type serviceRecommender struct {
	svc  *inference.Service
	busy *atomic.Int64 // nanoseconds inside Recommend
}

func (r serviceRecommender) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	defer func(t0 time.Time) { r.busy.Add(int64(time.Since(t0))) }(time.Now())
	in := make([]inference.UserFeatures, len(users))
	for i, u := range users {
		in[i] = inference.UserFeatures{City: u.City, Country: u.Country, CreditLimit: u.CreditLimit}
	}
	res, err := r.svc.Recommend(ctx, in, anchors, k)
	if err != nil {
		return Recommendations{}, err
	}
	out := Recommendations{Version: res.ModelVersion, ForUser: make([][]ScoredItem, len(res.Recommended)),
		Similar: make(map[string][]SimilarItem, len(anchors))}
	for i, items := range res.Recommended {
		out.ForUser[i] = make([]ScoredItem, len(items))
		for j, it := range items {
			out.ForUser[i][j] = ScoredItem{ID: it.ID, Score: it.Score}
		}
	}
	for j, a := range anchors {
		if j >= len(res.Similar) || res.Similar[j] == nil {
			continue
		}
		sim := make([]SimilarItem, len(res.Similar[j]))
		for i, it := range res.Similar[j] {
			sim[i] = SimilarItem{ID: it.ID, Distance: it.Distance}
		}
		out.Similar[a] = sim
	}
	return out, nil
}

// timedIndex adds up the time spent in the pgvector round trips (server work included).
type timedIndex struct {
	inner *inference.VectorIndex
	busy  atomic.Int64 // nanoseconds
}

func (t *timedIndex) ItemsFromUsers(ctx context.Context, embs [][]float32, k int) ([][]inference.ScoredItem, error) {
	defer func(t0 time.Time) { t.busy.Add(int64(time.Since(t0))) }(time.Now())
	return t.inner.ItemsFromUsers(ctx, embs, k)
}

func (t *timedIndex) ItemsFromItems(ctx context.Context, codes []string, k int) (map[string][]inference.SimilarItem, error) {
	defer func(t0 time.Time) { t.busy.Add(int64(time.Since(t0))) }(time.Now())
	return t.inner.ItemsFromItems(ctx, codes, k)
}

func (t *timedIndex) LiveVersion(ctx context.Context) (string, error) {
	defer func(t0 time.Time) { t.busy.Add(int64(time.Since(t0))) }(time.Now())
	return t.inner.LiveVersion(ctx)
}

// modelService trains the two-tower model on the lab's real ratings (a few epochs: the
// benchmark measures serving, not quality), publishes it to a file:// artifacts store, loads
// its embeddings into a fresh PostgreSQL schema with the `batch embeddings` loader, and returns
// the Service the worker would use, plus the catalog the model knows.
func modelService(b *testing.B) (*inference.Service, *timedIndex, produce.Catalog) {
	b.Helper()
	ctx := context.Background()

	f, err := os.Open(stacktest.LabFile(b, "ratings_ml_training_dataset.csv"))
	if err != nil {
		b.Fatal(err)
	}
	ex, err := train.ReadLabCSV(f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	icfg := inference.DefaultConfig()
	icfg.Train.Epochs = 2
	res, err := train.Train(ctx, ex, icfg.Train, nil)
	if err != nil {
		b.Fatal(err)
	}
	arts, err := objstore.Open("file://"+b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := train.Publish(ctx, arts, res, icfg.Train, inference.ModelCard{Created: time.Now().UTC(), Source: "worker benchmark"}); err != nil {
		b.Fatal(err)
	}

	pcfg := pgtest.Schema(b, "bench_worker_", 100)
	pool, err := pg.Connect(ctx, pcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	loader, err := embeddings.NewLoader(pool, pcfg, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	src, err := embeddings.ResolveArtifactsVersion(ctx, arts, "latest")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := loader.Load(ctx, src, false); err != nil {
		b.Fatal(err)
	}
	index, err := inference.NewVectorIndex(pool, pcfg)
	if err != nil {
		b.Fatal(err)
	}
	timed := &timedIndex{inner: index}
	svc, err := inference.NewService(icfg, arts, timed, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.Load(ctx); err != nil {
		b.Fatal(err)
	}

	var cat produce.Catalog
	for _, u := range res.Users {
		cat.Customers = append(cat.Customers, produce.Customer{Number: u.CustomerNumber, City: u.Features.City,
			Country: u.Features.Country, CreditLimit: u.Features.CreditLimit})
	}
	for _, it := range res.Items {
		cat.Products = append(cat.Products, it.ProductCode)
	}
	return svc, timed, cat
}

// BenchmarkProcessingPathModel is issue benchmark (a) with the real recommender: decode + user
// tower + both pgvector queries (one round trip each per batch, items-from-item cached per
// version) + Parquet (Snappy) encode + upload to the S3 gateway, in 1000-record GetRecords
// batches of producer-style events, one object per 10,000 records. Sub-benchmarks: unseen=0.1
// (the producer's mix: 90% of events from the 98 known customers, so a batch repeats users) and
// unseen=1 (every event a distinct user: the worst case for the user tower and the queries).
// Setup trains a model (about a second) and loads its embeddings into a unique schema.
// Each reports events/s, the share of the time spent inside Recommend, and the share of it
// spent in pgvector round trips (the rest of Recommend is mostly the user tower).
func BenchmarkProcessingPathModel(b *testing.B) {
	stacktest.SetAWSEnv(b)
	svc, index, cat := modelService(b)
	store := benchStore(b, "bench-model-")
	for _, unseen := range []float64{0.1, 1} {
		b.Run(fmt.Sprintf("unseen=%g", unseen), func(b *testing.B) {
			benchModelPath(b, svc, index, cat, store, unseen)
		})
	}
}

// benchModelPath drives one processor with events of which the share unseen come from
// customers the model has not seen (each with its own credit limit, so distinct users).
func benchModelPath(b *testing.B, svc *inference.Service, index *timedIndex, cat produce.Catalog, store objstore.Store, unseen float64) {
	gen, err := produce.NewGenerator(produce.GenConfig{Seed: 6, UnseenRatio: unseen}, cat)
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 10000, MaxBytes: 64 << 20, MaxAge: time.Hour}
	metrics, _ := NewMetrics(nil)
	var stopping atomic.Bool
	var busy atomic.Int64
	s := &shared{cfg: cfg, stream: "bench", lease: alwaysHeld{}, ctx: context.Background(), stopping: &stopping, live: map[string]*processor{},
		deps: Deps{Store: store, Recommender: serviceRecommender{svc: svc, busy: &busy}, K: 5, Log: zap.NewNop(), Metrics: metrics}}
	p := s.CreateProcessor().(*processor)
	p.Initialize(&kcl.InitializationInput{ShardId: fmt.Sprintf("shardId-unseen-%g", unseen)})
	now := time.Now()
	const batch = 1000
	seq := 0
	b.ResetTimer()
	index.busy.Store(0)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		recs := make([]ktypes.Record, batch)
		for j := range recs {
			seq++
			ev := gen.Next()
			recs[j] = ktypes.Record{Data: ev.Data, SequenceNumber: aws.String(fmt.Sprintf("%020d", seq)), PartitionKey: aws.String(ev.PartitionKey), ApproximateArrivalTimestamp: &now}
		}
		b.StartTimer()
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: nopCheckpointer{}})
	}
	b.StopTimer()
	if p.state != stateActive {
		b.Fatalf("processor state %v", p.state)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(100*float64(busy.Load())/float64(b.Elapsed()), "%recommend")
	b.ReportMetric(100*float64(index.busy.Load())/float64(b.Elapsed()), "%pgvector")
}
