package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
	"github.com/recstream/recstream/worker"
)

// TestSystemReplayAfterNewModel is the runbook's scenario: a bad model was live for a while;
// after a new one is loaded, `recstream replay --from --to` reprocesses that range. The output
// keeps exactly its keys (no duplicates), the range's records now carry the new model
// version, and the rest is untouched.
func TestSystemReplayAfterNewModel(t *testing.T) {
	if testing.Short() {
		t.Skip("system test skipped with -short (CI runs it)")
	}
	se := newSystemEnv(t, 2)
	stop, logs := se.startReady(t)
	const n = 120
	se.produce(t, n, 5)
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return se.output(t).Records >= n },
		"records not written; logs:\n%s", logs)
	if code := stop(); code != exitOK {
		t.Fatalf("worker exit %d; logs:\n%s", code, logs)
	}
	before := readSystemObjects(t, se.outDir)
	oldVersion := ""
	var first, last time.Time
	for _, r := range before.records {
		oldVersion = r.ModelVersion
		if first.IsZero() || r.ArrivalTime.Before(first) {
			first = r.ArrivalTime
		}
		if r.ArrivalTime.After(last) {
			last = r.ArrivalTime
		}
	}

	// A new model goes live; the whole range is reprocessed with it.
	runCLI(t, se.env, "train", "--csv", stacktest.LabFile(t, "ratings_ml_training_dataset.csv"), "--epochs", "2", "--seed", "9")
	runCLI(t, se.env, "batch", "embeddings")
	out := runCLI(t, se.env, "replay", "--from", first.Format(time.RFC3339Nano), "--to", last.Format(time.RFC3339Nano), "--json")
	var report []worker.ShardReplay
	// stdout (the report) comes first, then the log lines.
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&report); err != nil || len(report) != 2 {
		t.Fatalf("replay report: %v\n%s", err, out)
	}
	for _, r := range report {
		// Every record is valid under both models: each redone flush keeps its one output
		// object, and nothing is stale.
		if r.Deleted != 0 || r.Objects == 0 {
			t.Fatalf("shard %s: %d objects written, %d deleted", r.ShardID, r.Objects, r.Deleted)
		}
	}
	after := readSystemObjects(t, se.outDir)
	if strings.Join(after.keys, "\n") != strings.Join(before.keys, "\n") {
		t.Fatalf("keys changed:\nbefore %v\nafter  %v", before.keys, after.keys)
	}
	if len(after.records) != n {
		t.Fatalf("%d records after the replay, want %d", len(after.records), n)
	}
	seen := map[string]bool{}
	for _, r := range after.records {
		if seen[r.SessionID] {
			t.Fatalf("session %s twice after the replay", r.SessionID)
		}
		seen[r.SessionID] = true
		if r.ModelVersion == oldVersion || r.ModelVersion == "" {
			t.Fatalf("record %s still has model %s after the replay", r.SessionID, r.ModelVersion)
		}
	}
}

type systemObjects struct {
	keys    []string
	records []worker.OutputRecord
	errors  []worker.ErrorRecord
}

// readSystemObjects reads every object the worker wrote under dir (a file:// bucket).
func readSystemObjects(t *testing.T, dir string) systemObjects {
	t.Helper()
	store, err := objstore.Open("file://"+dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	objs, err := store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var o systemObjects
	for _, obj := range objs {
		o.keys = append(o.keys, obj.Key)
		b, err := objstore.ReadAll(ctx, store, obj.Key)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasPrefix(obj.Key, worker.ErrorsPrefix+"/"):
			ers, err := worker.DecodeErrorObject(b)
			if err != nil {
				t.Fatalf("%s: %v", obj.Key, err)
			}
			o.errors = append(o.errors, ers...)
		case strings.HasSuffix(obj.Key, ".parquet"):
			recs, err := worker.DecodeObject("parquet", b)
			if err != nil {
				t.Fatalf("%s: %v", obj.Key, err)
			}
			o.records = append(o.records, recs...)
		}
	}
	sort.Strings(o.keys)
	return o
}

// TestSystemOperatorSignals: what an operator sees when the worker cannot make progress for a
// reason no record is at fault for. (1) A live embeddings version without its model (loaded
// with --without-model): /readyz fails naming both versions, model_mismatch is 1, and a
// rollback clears both without a restart. (2) A shard whose records cannot be enriched (the
// same state, with traffic) shows as stalled: shard_stalled and /readyz name it, and nothing is
// sent to errors/ as if the records were bad.
func TestSystemOperatorSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("system test skipped with -short (CI runs it)")
	}
	se := newSystemEnv(t, 1)
	se.env = append(se.env, "RECSTREAM_INFERENCE_RELOAD_INTERVAL=1s", "RECSTREAM_WORKER_STALL_AFTER=5s")
	stop, logs := se.startReady(t)

	// Bare CSVs of another version (one value changed) loaded without a model.
	arts := ""
	for _, kv := range se.env {
		if v, ok := strings.CutPrefix(kv, "RECSTREAM_S3_BUCKETS_ARTIFACTS=file://"); ok {
			arts = v
		}
	}
	store, err := objstore.Open("file://"+arts, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	live, err := artifacts.Resolve(ctx, store, "latest")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, key := range []string{artifacts.ItemEmbeddingsKey, artifacts.UserEmbeddingsKey} {
		b, err := objstore.ReadAll(ctx, store, artifacts.Key(live, key))
		if err != nil {
			t.Fatal(err)
		}
		if key == artifacts.UserEmbeddingsKey {
			// One more user: a copy of the first row under a new customer number.
			lines := strings.SplitN(string(b), "\n", 3)
			_, vec, _ := strings.Cut(lines[1], ",")
			b = append(b, []byte("999999,"+vec+"\n")...)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(key)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, key), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runCLI(t, se.env, "batch", "embeddings", "--from", "file://"+dir, "--without-model")

	stacktest.Eventually(t, 30*time.Second, 250*time.Millisecond, func() bool {
		code, body := se.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, live)
	}, "/readyz stayed green with a live version that has no model")
	_, body := se.get("/metrics")
	if v, ok := metricValue(body, "recstream_worker_model_mismatch"); !ok || v != 1 {
		t.Fatalf("model_mismatch = %v (%v)", v, ok)
	}
	if !strings.Contains(logs.String(), `"level":"error"`) {
		t.Fatalf("no error line for the mismatch; logs:\n%s", logs)
	}

	// With traffic, the shard cannot move: it shows as stalled, and no record is blamed.
	se.produce(t, 20, 8)
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool {
		code, body := se.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "shardId-000000000000 stalled")
	}, "/readyz never named the stalled shard; logs:\n%s", logs)
	_, body = se.get("/metrics")
	if v, ok := metricValue(body, `recstream_worker_shard_stalled{shard_id="shardId-000000000000"}`); !ok || v != 1 {
		t.Fatalf("shard_stalled = %v (%v)", v, ok)
	}
	if rep := se.output(t); rep.ErrorRecords != 0 || rep.Records != 0 {
		t.Fatalf("while stuck: %d records, %d errors written", rep.Records, rep.ErrorRecords)
	}

	// Roll back: the old version (with its model) is live again, everything recovers.
	runCLI(t, se.env, "batch", "embeddings", "--rollback")
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool {
		code, _ := se.get("/readyz")
		return code == http.StatusOK && se.output(t).Records == 20
	}, "no recovery after the rollback; logs:\n%s", logs)
	_, body = se.get("/metrics")
	if v, _ := metricValue(body, "recstream_worker_model_mismatch"); v != 0 {
		t.Fatalf("model_mismatch = %v after the rollback", v)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("worker exit %d", code)
	}
}
