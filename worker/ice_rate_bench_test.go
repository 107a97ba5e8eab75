package worker

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/stacktest"
)

// BenchmarkIcebergRate is issue 20's objects and commits figure for the Iceberg output: 1,000
// events/s on 4 shards for ICE_RATE_DURATION (default 3m) into an Iceberg table with the shipped
// settings (flush windows of worker.flush.max_age, or ICE_RATE_MAX_AGE; commit_interval 5 s, or
// ICE_RATE_COMMIT_INTERVAL), one worker. It reports the worker's catalog commits per minute, and the table's objects
// (data files, and everything else under the table: metadata.json, manifest lists, manifests)
// before and after `compact` (every hour compacted, snapshots expired), per hour of traffic.
func BenchmarkIcebergRate(b *testing.B) {
	requireBench(b)
	dur := 3 * time.Minute
	if v := os.Getenv("ICE_RATE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			b.Fatalf("ICE_RATE_DURATION=%q: want a duration of at least 1m", v)
		}
		dur = d
	}
	const rate, tick = 1000, 100 * time.Millisecond
	for range b.N {
		e := newTestEnv(b, 4)
		e.Cfg = DefaultConfig()
		e.Cfg.StatusInterval = 0
		if v := os.Getenv("ICE_RATE_MAX_AGE"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatalf("ICE_RATE_MAX_AGE=%q: %v", v, err)
			}
			e.Cfg.Flush.MaxAge = d
		}
		e.useIceberg(b)
		// The shipped commit_interval, for the worker's config and the committer the env opens
		// (icetabletest's default is 200 ms).
		e.Ice.Config.CommitInterval = icetable.DefaultConfig().CommitInterval
		if v := os.Getenv("ICE_RATE_COMMIT_INTERVAL"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatalf("ICE_RATE_COMMIT_INTERVAL=%q: %v", v, err)
			}
			e.Ice.Config.CommitInterval = d
		}
		e.Cfg.Output.Iceberg.CommitInterval = e.Ice.Config.CommitInterval
		w, _ := e.benchWorker(b, "icerate", fakeRecommender{})
		r := start(w)
		// Paced puts: rate events a second, in PutRecords calls every tick.
		n := int(dur/tick) * rate * int(tick) / int(time.Second)
		per := rate * int(tick) / int(time.Second)
		start := time.Now()
		t := time.NewTicker(tick)
		for i := 0; i < n; i += per {
			<-t.C
			recs := make([][]byte, per)
			for j := range recs {
				recs[j] = event(i+j, "ir")
			}
			e.put(b, recs)
		}
		t.Stop()
		putFor := time.Since(start)
		records := func() int64 {
			var sum int64
			for _, f := range e.Ice.ReadTable(b).Files {
				sum += f.Records
			}
			return sum
		}
		stacktest.Eventually(b, 5*time.Minute, time.Second, func() bool { return records() >= int64(n) }, "records not all committed")
		if err := r.stop(b); err != nil {
			b.Fatal(err)
		}
		if got := records(); got != int64(n) {
			b.Fatalf("%d records in the table, want %d", got, n)
		}
		snap := e.Ice.ReadTable(b)
		snaps := snap.Metadata.Snapshots
		first, last := snaps[0].TimestampMs, snaps[len(snaps)-1].TimestampMs
		span := time.Duration(last-first) * time.Millisecond
		perMin := float64(len(snaps)-1) / span.Minutes()
		dataBefore, otherBefore := e.tableObjects(b, snap.Metadata.Location)

		ctx := context.Background()
		cat := e.Ice.Catalog(b)
		time.Sleep(10 * time.Millisecond) // snapshot ages are compared at millisecond grain
		rep, err := icetable.Compact(ctx, cat, e.Ice.Config.Ident(), icetable.CompactOptions{Now: time.Now().Add(3 * time.Hour),
			TargetBytes: 128 << 20, ExpireAfter: time.Millisecond, OrphanGrace: time.Millisecond, Log: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		dataAfter, otherAfter := e.tableObjects(b, snap.Metadata.Location)
		hours := float64(time.Hour) / float64(putFor)
		b.Logf("%s at %d events/s (%d records, %s windows, commit_interval %s): %d commits in %s (%.1f/min); before compact %d data files + %d other objects (%.0f + %.0f per hour); compact %+v; after %d data files + %d other objects",
			putFor.Round(time.Second), rate, n, e.Cfg.Flush.MaxAge, e.Ice.Config.CommitInterval, len(snaps), span.Round(time.Second), perMin, dataBefore, otherBefore,
			float64(dataBefore)*hours, float64(otherBefore)*hours, rep, dataAfter, otherAfter)
		b.ReportMetric(perMin, "commits/min")
		b.ReportMetric(float64(dataBefore)*hours, "data-files/hour")
		b.ReportMetric(float64(otherBefore)*hours, "metadata-objects/hour")
		b.ReportMetric(float64(dataAfter), "data-files-after-compact")
		b.ReportMetric(float64(otherAfter), "metadata-objects-after-compact")
	}
}

// tableObjects counts the objects under a table location: data files (data/) and the rest.
func (e *testEnv) tableObjects(b *testing.B, location string) (data, other int) {
	b.Helper()
	u, err := url.Parse(location)
	if err != nil {
		b.Fatal(err)
	}
	prefix := strings.TrimPrefix(u.Path, "/") + "/"
	p := s3.NewListObjectsV2Paginator(e.Ice.S3, &s3.ListObjectsV2Input{Bucket: &u.Host, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		for _, o := range page.Contents {
			if strings.HasPrefix(strings.TrimPrefix(*o.Key, prefix), "data/") {
				data++
			} else {
				other++
			}
		}
	}
	return data, other
}
