package worker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// dirStore is a fresh file:// store: these tests are about the processor's logic.
func dirStore(t testing.TB) objstore.Store {
	t.Helper()
	s, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// untouched is the checkpointer's value until something is checkpointed: SHARD_END
// (Checkpoint(nil)) reads as "".
const untouched = "untouched"

// waitProcess waits up to d for done; it reports whether done closed in time.
func waitProcess(done <-chan struct{}, d time.Duration) bool {
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestShardNotEndedPastUntakenPage pins a lost page: when the recommender rejected every
// input (the neutral probe too), enrich's wait loop never looked at the stop request and,
// once the drain was abandoned at shutdown_timeout, returned with the processor still
// active; on the final page of a closed shard with an empty buffer, Shutdown(TERMINATE) then
// wrote SHARD_END past a page nothing had taken. Now the loop stops on the request (the page
// is left for replay) and a processor that did not take its page is never active.
func TestShardNotEndedPastUntakenPage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		end   func(e *seamEnv) // what ends the wait: SIGTERM, or the drain abandoned
		state procState
	}{
		{"stop requested", func(e *seamEnv) { e.stopping.Store(true) }, stateStopped},
		{"drain abandoned", func(e *seamEnv) { e.abandon() }, stateDead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &poisonRecommender{}
			rec.rejectAll.Store(true)
			e := newSeamEnv(t, testConfig(), dirStore(t), rec)
			e.cp.last = untouched
			done := make(chan struct{})
			go func() {
				defer close(done)
				e.process(e.records(event(1, "s"), event(2, "s"), event(3, "s")))
			}()
			// The page waits as for an outage: the wait loop has counted retries.
			stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool {
				return testutil.ToFloat64(e.metrics.Retries.WithLabelValues(e.p.shard, opRecommend.String())) >= 2
			}, "the processor never waited for the recommender")
			tc.end(e)
			if !waitProcess(done, 10*time.Second) {
				t.Errorf("ProcessRecords still waiting 10 s after %s", tc.name)
				e.abandon() // as Run does at shutdown_timeout
				if !waitProcess(done, 30*time.Second) {
					t.Fatal("ProcessRecords still running after the drain was abandoned")
				}
			}
			if e.p.state != tc.state {
				t.Errorf("state %v after the page was left, want %v", e.p.state, tc.state)
			}
			// The page was the closed shard's last: the library calls Shutdown(TERMINATE).
			e.p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: e.cp})
			if got := e.cp.get(); got != untouched {
				t.Fatalf("checkpoint %q written (\"\" is SHARD_END) by a processor that took none of its page", got)
			}
			if recs, errs, _ := readAll(t, e.s.deps.Store); len(recs)+len(errs) != 0 {
				t.Fatalf("%d records and %d errors written from an untaken page", len(recs), len(errs))
			}
		})
	}
}

// timeoutRecommender answers calls for at most maxUsers users; a larger call runs until its
// context ends, as a query on a large catalog runs past recommend_timeout. It records the
// largest call it answered.
type timeoutRecommender struct {
	maxUsers atomic.Int64
	timedOut atomic.Int64
	singles  atomic.Int64 // single-user calls that timed out
	answered atomic.Int64
	largest  atomic.Int64
}

func (r *timeoutRecommender) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	if int64(len(users)) > r.maxUsers.Load() {
		<-ctx.Done()
		r.timedOut.Add(1)
		if len(users) == 1 {
			r.singles.Add(1)
		}
		return Recommendations{}, fmt.Errorf("items from %d users: %w", len(users), ctx.Err())
	}
	r.answered.Add(1)
	for {
		l := r.largest.Load()
		if int64(len(users)) <= l || r.largest.CompareAndSwap(l, int64(len(users))) {
			break
		}
	}
	return fakeRecommender{}.Recommend(ctx, users, anchors, k)
}

// TestSlowRecommendCallIsSplit pins a batch retried whole forever: a Recommend call that ran
// past recommend_timeout was treated as an outage, so a 10,000-record page whose call is too
// slow for the timeout (latency grows with the users of a call) was resubmitted unchanged
// for ever. Calls are now bounded by recommend_batch, and a call for several users that times
// out is split in halves: the page is fully enriched, nothing goes to errors/.
func TestSlowRecommendCallIsSplit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		batch    int   // worker.recommend_batch
		maxUsers int64 // the recommender times out above this
	}{
		{"bounded calls time out", 500, 300},
		{"unbounded calls time out", 10000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &timeoutRecommender{}
			rec.maxUsers.Store(tc.maxUsers)
			cfg := testConfig()
			cfg.RecommendTimeout = 100 * time.Millisecond
			cfg.RecommendBatch = tc.batch
			cfg.Flush = FlushConfig{MaxRecords: 20000, MaxBytes: 64 << 20, MaxAge: time.Hour}
			e := newSeamEnv(t, cfg, dirStore(t), rec)
			const n = 10000
			payloads := make([][]byte, n)
			for i := range payloads {
				payloads[i] = event(i, "t")
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				e.process(e.records(payloads...))
			}()
			if !waitProcess(done, 60*time.Second) {
				e.stopping.Store(true) // let the goroutine end
				waitProcess(done, 30*time.Second)
				t.Fatalf("page not enriched after 60 s: %d calls timed out, %d answered", rec.timedOut.Load(), rec.answered.Load())
			}
			if e.p.state != stateActive {
				t.Fatalf("state %v", e.p.state)
			}
			if e.p.buf.n != n || len(e.p.buf.recs) != n || len(e.p.buf.errs) != 0 {
				t.Fatalf("buffered %d records, %d enriched, %d errors; want %d, %d, 0", e.p.buf.n, len(e.p.buf.recs), len(e.p.buf.errs), n, n)
			}
			for _, r := range e.p.buf.recs {
				if len(r.RecommendedItems) == 0 || r.ModelVersion == "" {
					t.Fatalf("record %s not enriched: %+v", r.SessionID, r)
				}
			}
			if l := rec.largest.Load(); l > int64(tc.batch) || l > tc.maxUsers {
				t.Fatalf("largest answered call %d users, want <= recommend_batch %d and <= %d", l, tc.batch, tc.maxUsers)
			}
			if rec.singles.Load() != 0 {
				t.Fatalf("%d single-user calls timed out", rec.singles.Load())
			}
		})
	}
}

// TestSingleUserTimeoutIsAnOutage: a call for one user that still runs past
// recommend_timeout is not the record's fault: it is retried with backoff (never sent to
// errors/) until the recommender answers again.
func TestSingleUserTimeoutIsAnOutage(t *testing.T) {
	rec := &timeoutRecommender{} // maxUsers 0: every call times out
	cfg := testConfig()
	cfg.RecommendTimeout = 100 * time.Millisecond
	e := newSeamEnv(t, cfg, dirStore(t), rec)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.process(e.records(event(1, "o"), event(2, "o"), event(3, "o"), event(4, "o")))
	}()
	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool { return rec.singles.Load() >= 3 },
		"single-user calls were not retried")
	select {
	case <-done:
		t.Fatalf("ProcessRecords returned while every call times out: %d errors", len(e.p.buf.errs))
	default:
	}
	rec.maxUsers.Store(1 << 20)
	if !waitProcess(done, 30*time.Second) {
		t.Fatal("processor still waiting after the recommender recovered")
	}
	if e.p.buf.n != 4 || len(e.p.buf.recs) != 4 {
		t.Fatalf("buffered %d records, %d enriched; want 4, 4 (errors: %+v)", e.p.buf.n, len(e.p.buf.recs), e.p.buf.errs)
	}
}

// similarRecommender's similar-items lookup fails deterministically for the anchor bad, or
// for every anchor while failAll is set (an item table the query rejects: a dimension
// change). Each user is recommended k items, bad first, so a probe must not take the first
// item blindly.
type similarRecommender struct {
	bad     string
	failAll atomic.Bool
}

func (r *similarRecommender) Recommend(_ context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	for _, a := range anchors {
		if r.failAll.Load() {
			return Recommendations{}, fmt.Errorf("%w: items from items: different vector dimensions 32 and 16", ErrDeterministic)
		}
		if a == r.bad {
			return Recommendations{}, fmt.Errorf("%w: items from items: NaN not allowed in vector", ErrDeterministic)
		}
	}
	out := Recommendations{Version: "v1", Similar: map[string][]SimilarItem{}}
	for range users {
		items := []ScoredItem{{ID: r.bad, Score: 1}}
		for i := 1; i < k; i++ {
			items = append(items, ScoredItem{ID: fmt.Sprintf("ITEM-%d", i), Score: 1 / float64(i+1)})
		}
		out.ForUser = append(out.ForUser, items)
	}
	for _, a := range anchors {
		out.Similar[a] = []SimilarItem{{ID: a + "-sim", Distance: 0.5}}
	}
	return out, nil
}

// TestSimilarItemsOutageIsNotPoison pins records blamed for an outage: the neutral probe
// asked without an anchor, so when the similar-items lookup failed for every product, each
// record with a browse history passed bisection as "failing alone", the probe passed, and
// the whole page went to errors/ as recommend_failed. The probe now also asks for the similar
// items of a product the recommender itself recommends: the page waits as for an outage and
// is written once the lookup recovers.
func TestSimilarItemsOutageIsNotPoison(t *testing.T) {
	rec := &similarRecommender{bad: "S4"}
	rec.failAll.Store(true)
	e := newSeamEnv(t, testConfig(), dirStore(t), rec)
	payloads := make([][]byte, 10)
	for i := range payloads {
		payloads[i] = event(i, "m") // every one has a browse history, so an anchor
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.process(e.records(payloads...))
	}()
	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		return testutil.ToFloat64(e.metrics.Retries.WithLabelValues(e.p.shard, opRecommend.String())) >= 2
	}, "the processor neither waited nor finished")
	select {
	case <-done:
		t.Fatalf("page taken while the similar-items lookup fails for every product: %d of %d records blamed (%s: %s)",
			len(e.p.buf.errs), e.p.buf.n, firstReason(e.p.buf.errs), firstMessage(e.p.buf.errs))
	default:
	}
	rec.failAll.Store(false)
	if !waitProcess(done, 30*time.Second) {
		t.Fatal("processor still waiting after the lookup recovered")
	}
	// Once it works again, only the record whose own anchor fails is blamed.
	if e.p.buf.n != 10 || len(e.p.buf.recs) != 9 || len(e.p.buf.errs) != 1 {
		t.Fatalf("buffered %d: %d enriched, %d errors; want 10: 9, 1", e.p.buf.n, len(e.p.buf.recs), len(e.p.buf.errs))
	}
}

// TestRecordWithBadAnchorIsolated: a record whose own anchor the similar-items lookup
// refuses still goes to errors/ (the probe's product is another one, although the
// recommender names the bad anchor first), and the rest of its page is written.
func TestRecordWithBadAnchorIsolated(t *testing.T) {
	rec := &similarRecommender{bad: "S4"}
	e := newSeamEnv(t, testConfig(), dirStore(t), rec)
	payloads := make([][]byte, 10)
	for i := range payloads {
		payloads[i] = event(i, "b") // anchors: even i S(i%7), odd i UNKNOWN_1; only i=4 has S4
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.process(e.records(payloads...))
	}()
	if !waitProcess(done, 30*time.Second) {
		e.stopping.Store(true) // let the goroutine end
		waitProcess(done, 30*time.Second)
		t.Fatal("page still waiting: the probe found no product other than the record's own anchor")
	}
	if e.p.state != stateActive || e.p.buf.n != 10 || len(e.p.buf.recs) != 9 || len(e.p.buf.errs) != 1 {
		t.Fatalf("state %v, buffered %d: %d enriched, %d errors; want 10: 9, 1", e.p.state, e.p.buf.n, len(e.p.buf.recs), len(e.p.buf.errs))
	}
	er := e.p.buf.errs[0]
	if er.Reason != ReasonRecommendFailed || !strings.Contains(er.Message, "NaN not allowed") || !strings.Contains(string(er.PayloadBase64), `"b-000004"`) {
		t.Fatalf("errors/ record %+v, want recommend_failed for event 4", er)
	}
}

func firstReason(errs []ErrorRecord) Reason {
	if len(errs) == 0 {
		return ""
	}
	return errs[0].Reason
}

func firstMessage(errs []ErrorRecord) string {
	if len(errs) == 0 {
		return ""
	}
	return errs[0].Message
}
