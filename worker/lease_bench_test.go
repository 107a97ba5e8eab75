package worker

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go/middleware"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/stacktest"
)

// The leases-at-scale benchmarks take minutes on the local stack and are not part of the
// normal test run:
//
//	RECSTREAM_LEASE_BENCH=1 go test -run '^$' -bench Leases -benchtime 1x -timeout 30m ./worker/
//
// With the production lease settings (DefaultConfig: failover_time 10s, shard_sync_interval
// 2s, lease_stealing_interval 10s), 4 in-process workers: the time from start to every shard
// leased and from a hard kill of the busiest worker to all its shards leased by survivors
// (median of 3 runs, 16 and 64 shards), and the DynamoDB requests per minute per worker at 64
// shards under light traffic (counted by an SDK middleware on each worker's client).
const leaseBenchEnv = "RECSTREAM_LEASE_BENCH"

func requireLeaseBench(b *testing.B) {
	if os.Getenv(leaseBenchEnv) == "" {
		b.Skipf("lease benchmarks need the local stack and minutes; set %s=1", leaseBenchEnv)
	}
}

func leaseBenchConfig() Config {
	c := DefaultConfig()
	c.StatusInterval = 0
	// The request counts in the README assume 1 s windows (one checkpoint per shard and
	// second with records): the low-latency profile, the most DynamoDB writes per shard.
	c.Flush.MaxAge = time.Second
	return c
}

// dropStream deletes the env's stream now (kinesalite limits the open shards of all streams)
// and waits until it is gone.
func (e *testEnv) dropStream(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	_, _ = e.kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(e.Stream)})
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		_, err := e.kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(e.Stream)})
		return err != nil
	}, "stream %s not deleted", e.Stream)
}

// leaseRun starts 4 workers on a fresh stream of n shards, waits for every shard to be
// leased, kills the busiest worker and waits for survivors to hold all its shards.
func leaseRun(b *testing.B, n int) (leased, takeover time.Duration, orphans int) {
	e := newTestEnv(b, n)
	defer e.dropStream(b)
	e.Cfg = leaseBenchConfig()
	log := zap.NewNop()
	observer := leaseStore(b, e.db, e.DynamoDB.LeaseTable, "observer", e.Cfg.FailoverTime, nil)
	began := time.Now()
	ms := make([]*member, 4)
	for i := range ms {
		ms[i] = e.startMember(b, fmt.Sprintf("b%d", i), log, nil)
	}
	defer func() {
		for _, m := range ms {
			m.r.cancel()
		}
		for _, m := range ms {
			<-m.r.done
			m.r.done <- nil
		}
	}()
	stacktest.Eventually(b, 120*time.Second, 50*time.Millisecond, func() bool {
		c, _ := e.owners(b, observer)
		return c[""] == 0 && c["b0"]+c["b1"]+c["b2"]+c["b3"] == n
	}, "not all %d shards leased", n)
	leased = time.Since(began)
	c, _ := e.owners(b, observer)
	victim := ms[0]
	for _, m := range ms {
		if c[m.id] > c[victim.id] {
			victim = m
		}
	}
	orphans = c[victim.id]
	victim.kill()
	killed := time.Now()
	stacktest.Eventually(b, 120*time.Second, 50*time.Millisecond, func() bool {
		c, _ := e.owners(b, observer)
		return c[victim.id] == 0 && c[""] == 0
	}, "the killed worker's shards were not taken over")
	return leased, time.Since(killed), orphans
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func BenchmarkLeases(b *testing.B) {
	requireLeaseBench(b)
	for _, n := range []int{16, 64} {
		b.Run(fmt.Sprintf("shards=%d", n), func(b *testing.B) {
			for range b.N {
				var starts, takeovers []time.Duration
				for run := range 3 {
					l, k, o := leaseRun(b, n)
					b.Logf("run %d: %d shards leased by 4 workers in %s; killed worker's %d shards re-leased in %s",
						run, n, l.Round(10*time.Millisecond), o, k.Round(10*time.Millisecond))
					starts, takeovers = append(starts, l), append(takeovers, k)
				}
				b.ReportMetric(median(starts).Seconds(), "s-all-leased")
				b.ReportMetric(median(takeovers).Seconds(), "s-kill-to-re-leased")
			}
		})
	}
	b.Run("requests/shards=64", func(b *testing.B) {
		for range b.N {
			benchRequests(b, 64, 4, time.Minute)
		}
	})
}

// opCount counts a client's DynamoDB requests by operation.
type opCount struct {
	mu sync.Mutex
	on bool
	n  map[string]int
}

func (c *opCount) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("countRequests",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				c.mu.Lock()
				if c.on {
					c.n[awsmiddleware.GetOperationName(ctx)]++
				}
				c.mu.Unlock()
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

// benchRequests runs w workers on n shards with one record per shard every second, and
// counts each worker's DynamoDB requests during window once every shard is leased.
func benchRequests(b *testing.B, n, w int, window time.Duration) {
	e := newTestEnv(b, n)
	defer e.dropStream(b)
	e.Cfg = leaseBenchConfig()
	_, hashes := e.shardHashKeys(b)
	tr := e.startTraffic(b, "q", time.Second, n, func(i int) (string, *string) { return fmt.Sprint(i), aws.String(hashes[i%n]) })
	defer tr.halt()
	observer := leaseStore(b, e.db, e.DynamoDB.LeaseTable, "observer", e.Cfg.FailoverTime, nil)
	counts := make([]*opCount, w)
	ms := make([]*member, w)
	for i := range ms {
		counts[i] = &opCount{n: map[string]int{}}
		ms[i] = e.startMember(b, fmt.Sprintf("q%d", i), zap.NewNop(), nil, counts[i].option)
	}
	defer func() {
		for _, m := range ms {
			m.r.cancel()
		}
		for _, m := range ms {
			<-m.r.done
			m.r.done <- nil
		}
	}()
	stacktest.Eventually(b, 120*time.Second, 100*time.Millisecond, func() bool {
		c, _ := e.owners(b, observer)
		return c[""] == 0 && len(c) == w
	}, "not all %d shards leased", n)
	// Skip the start-up transient (first flushes, first stealing checks).
	settle := time.Now().Add(e.Cfg.LeaseStealingInterval)
	stacktest.Eventually(b, 2*e.Cfg.LeaseStealingInterval, 100*time.Millisecond, func() bool { return time.Now().After(settle) }, "")
	for _, c := range counts {
		c.mu.Lock()
		c.on = true
		c.mu.Unlock()
	}
	start := time.Now()
	end := start.Add(window)
	stacktest.Eventually(b, window+time.Minute, 100*time.Millisecond, func() bool { return time.Now().After(end) }, "")
	total := map[string]int{}
	for _, c := range counts {
		c.mu.Lock()
		c.on = false
		for op, k := range c.n {
			total[op] += k
		}
		c.mu.Unlock()
	}
	minutes := time.Since(start).Minutes()
	var parts []string
	var all float64
	ops := make([]string, 0, len(total))
	for op := range total {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		per := float64(total[op]) / float64(w) / minutes
		all += per
		parts = append(parts, fmt.Sprintf("%s %.0f", op, per))
	}
	c, _ := e.owners(b, observer)
	b.Logf("%d shards, %d workers (leases %v): DynamoDB requests per minute per worker: %.0f (%s)", n, w, c, all, strings.Join(parts, ", "))
	b.ReportMetric(all, "ddb-req/min/worker")
}
