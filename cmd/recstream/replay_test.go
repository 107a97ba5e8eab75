package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

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
	logs := &syncBuffer{}
	stop := se.startWorker(t, logs)
	stacktest.Eventually(t, 60*time.Second, 200*time.Millisecond, func() bool {
		code, _ := se.get("/readyz")
		return code == http.StatusOK
	}, "worker never became ready; logs:\n%s", logs)
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
}

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
		if !strings.HasSuffix(obj.Key, ".parquet") {
			continue
		}
		b, err := objstore.ReadAll(ctx, store, obj.Key)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := worker.DecodeObject("parquet", b)
		if err != nil {
			t.Fatal(err)
		}
		o.records = append(o.records, recs...)
	}
	sort.Strings(o.keys)
	return o
}
