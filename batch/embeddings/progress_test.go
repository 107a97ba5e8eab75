package embeddings_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/recstream/recstream/batch/embeddings"
)

// A load logs where it is: one line when each file's copy starts and ends, one when each
// index build starts and ends (with its duration), and heartbeats in between that carry the
// rows copied, the elapsed time and an ETA, and during an HNSW build PostgreSQL's own count
// of the tuples inserted into the graph.
func TestLoadLogsProgress(t *testing.T) {
	cfg, pool := testPG(t)
	core, logs := observer.New(zap.InfoLevel)
	l, err := embeddings.NewLoader(pool, cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	embeddings.SetProgressEvery(l, 10*time.Millisecond)
	const items, users = 6000, 3000
	itemCSV, userCSV := genEmbeddings(11, items, users, 32, 0).csvs()
	src := writeDir(t, t.TempDir(), itemCSV, userCSV)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := l.Load(ctx, src, false); err != nil {
		t.Fatal(err)
	}

	if n := logs.FilterMessage("embeddings copy started").Len(); n != 2 {
		t.Errorf("%d 'embeddings copy started' lines, want 2", n)
	}
	copied := logs.FilterMessage("embeddings copied").All()
	if len(copied) != 2 || copied[0].ContextMap()["rows"] != int64(items) || copied[1].ContextMap()["rows"] != int64(users) {
		t.Errorf("'embeddings copied' lines: %v, want items %d then users %d", copied, items, users)
	}
	started, built := logs.FilterMessage("embeddings index build started").All(), logs.FilterMessage("embeddings index built").All()
	if len(started) != 6 || len(built) != 6 {
		t.Fatalf("%d index build started / %d built lines, want 6 each", len(started), len(built))
	}
	hnsw := 0
	for i, b := range built {
		f := b.ContextMap()
		if _, ok := f["duration"]; !ok {
			t.Errorf("built line %v has no duration", f)
		}
		if f["building"] != started[i].ContextMap()["building"] {
			t.Errorf("built line %d is %v, started %v", i, f["building"], started[i].ContextMap()["building"])
		}
		if strings.HasPrefix(f["building"].(string), "hnsw") {
			hnsw++
			if started[i].ContextMap()["maintenance_work_mem"] != cfg.MaintenanceWorkMem {
				t.Errorf("hnsw start line %v lacks maintenance_work_mem %s", started[i].ContextMap(), cfg.MaintenanceWorkMem)
			}
		}
	}
	if hnsw != 2 {
		t.Errorf("%d hnsw builds logged, want 2", hnsw)
	}

	beats := logs.FilterMessage("embeddings progress").All()
	if len(beats) == 0 {
		t.Fatal("no 'embeddings progress' line")
	}
	var graph bool
	for _, b := range beats {
		f := b.ContextMap()
		if _, ok := f["elapsed"]; !ok {
			t.Errorf("progress line %v has no elapsed", f)
		}
		switch f["stage"] {
		case "copy":
			for _, k := range []string{"file", "rows_done", "bytes_done", "bytes_total"} {
				if _, ok := f[k]; !ok {
					t.Errorf("copy progress line %v has no %s", f, k)
				}
			}
		case "index":
			if _, ok := f["building"]; !ok {
				t.Errorf("index progress line %v says not what it builds", f)
			}
			if _, ok := f["tuples_done"]; ok && strings.HasPrefix(f["building"].(string), "hnsw") {
				graph = true
			}
		default:
			t.Errorf("progress line with stage %v", f["stage"])
		}
	}
	if !graph {
		t.Errorf("no index progress line during an HNSW build carries tuples_done (%d lines)", len(beats))
	}
}

// The build is warned about when the graph cannot fit maintenance_work_mem (at 1,000,000 × 32
// with 256MB it slowed about fivefold after some 300,000 rows), and not when it fits.
func TestLoadWarnsWhenTheGraphDoesNotFit(t *testing.T) {
	for _, tc := range []struct {
		mem  string
		warn bool
	}{{"1MB", true}, {"64MB", false}} {
		t.Run(tc.mem, func(t *testing.T) {
			cfg, pool := testPG(t)
			cfg.MaintenanceWorkMem = tc.mem
			core, logs := observer.New(zap.InfoLevel)
			l, err := embeddings.NewLoader(pool, cfg, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			itemCSV, userCSV := genEmbeddings(12, 2000, 100, 32, 0).csvs() // about 1.6 MB of graph
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if _, err := l.Load(ctx, writeDir(t, t.TempDir(), itemCSV, userCSV), false); err != nil {
				t.Fatal(err)
			}
			warned := logs.FilterLevelExact(zap.WarnLevel).FilterMessageSnippet("will not fit in maintenance_work_mem").All()
			if got := len(warned) > 0; got != tc.warn {
				t.Fatalf("maintenance_work_mem %s: warned %v, want %v (%v)", tc.mem, got, tc.warn, warned)
			}
			if tc.warn {
				f := warned[0].ContextMap()
				if f["rows_that_fit"].(int64) >= 2000 || f["graph_estimate_mb"].(int64) < 1 {
					t.Errorf("warning fields %v: want fewer than 2000 rows that fit and a graph of 1 MB or more", f)
				}
			}
		})
	}
}
