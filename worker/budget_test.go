package worker

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/objstore"
)

// TestBudgetAdmission is the budget's rule: extra bytes are admitted when they fit, or, when
// the budget is spent, to the one waiter holding the most while no other shard is running
// (inside ProcessRecords, where it could still flush and release).
func TestBudgetAdmission(t *testing.T) {
	type sh struct {
		id        string
		held      int64
		running   bool
		waiting   bool
		asking    bool // the share that asks
		extraAsk  int64
		overdraft bool // holds the overdraft
	}
	for _, tc := range []struct {
		name   string
		limit  int64
		shares []sh
		want   bool
	}{
		{"fits exactly", 100, []sh{{id: "a", held: 30, running: true}, {id: "q", held: 20, asking: true, extraAsk: 50}}, true},
		{"spent while another shard runs", 100, []sh{{id: "a", held: 60, running: true}, {id: "q", held: 30, asking: true, extraAsk: 20}}, false},
		// The deadlock case: every shard holds a partly filled window and waits; one of them
		// must go on, or no window ever closes.
		{"spent, every holder waits, the asker holds most", 100, []sh{{id: "a", held: 40, waiting: true}, {id: "b", held: 20, waiting: true}, {id: "q", held: 50, asking: true, extraAsk: 20}}, true},
		{"spent, every holder waits, another holds more", 100, []sh{{id: "a", held: 60, waiting: true}, {id: "q", held: 50, asking: true, extraAsk: 20}}, false},
		{"spent, tie goes to the lowest shard id (asker lower)", 80, []sh{{id: "b", held: 40, waiting: true}, {id: "a", held: 40, asking: true, extraAsk: 20}}, true},
		{"spent, tie goes to the lowest shard id (asker higher)", 80, []sh{{id: "a", held: 40, waiting: true}, {id: "b", held: 40, asking: true, extraAsk: 20}}, false},
		{"a holder between calls (fetching, idle at the tip) does not block progress", 100, []sh{{id: "a", held: 60}, {id: "q", held: 50, asking: true, extraAsk: 20}}, true},
		{"nothing extra is always admitted", 10, []sh{{id: "a", held: 60, running: true}, {id: "q", held: 50, asking: true}}, true},
		{"alone: a page larger than the whole budget", 10, []sh{{id: "q", asking: true, extraAsk: 50}}, true},
		{"empty waiter behind a holder that waits too", 100, []sh{{id: "a", held: 90, waiting: true}, {id: "q", asking: true, extraAsk: 20}}, false},
		{"the overdraft holder goes on while others run", 100, []sh{{id: "a", held: 60, running: true}, {id: "q", held: 70, asking: true, extraAsk: 20, overdraft: true}}, true},
		{"one overdraft at a time", 100, []sh{{id: "a", held: 30, overdraft: true}, {id: "q", held: 70, asking: true, extraAsk: 20}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newMemBudget(tc.limit, nil)
			var q *budgetShare
			var extra int64
			for _, s := range tc.shares {
				share := b.join(s.id)
				b.setLocked(share, s.held)
				share.running = s.running
				b.setWaitingLocked(share, s.waiting)
				if s.overdraft {
					b.overdraft = share
				}
				if s.asking {
					q, extra = share, s.extraAsk
				}
			}
			if got := b.admitLocked(q, extra); got != tc.want {
				t.Fatalf("admitted %v, want %v (used %d of %d)", got, tc.want, b.used, tc.limit)
			}
		})
	}
}

// TestBudgetOverdraftEndsAtFlush: the overdraft passes to the next waiter once its holder's
// buffer shrinks (a flush), and close gives back everything.
func TestBudgetOverdraftEndsAtFlush(t *testing.T) {
	b := newMemBudget(100, nil)
	a, q := b.join("a"), b.join("q")
	mustGrant := func(what string, w <-chan struct{}) {
		t.Helper()
		if w != nil {
			t.Fatalf("%s: not granted (used %d of %d)", what, b.used, b.limit)
		}
	}
	mustGrant("a takes a first page of 40", a.ask(0, 40, true))
	mustGrant("a buffers it, reserves 40 more: 80", a.ask(40, 40, false))
	mustGrant("q takes a page of 10: 90", q.ask(0, 10, true))
	mustGrant("q buffers it, reserves 10: 100", q.ask(10, 10, false))
	mustGrant("a's next page was reserved", a.ask(40, 40, true))
	mustGrant("a past the limit, alone: the overdraft", a.ask(80, 40, false))
	if b.overdraft != a {
		t.Fatal("a does not hold the overdraft")
	}
	mustGrant("q's next page was reserved", q.ask(10, 10, true))
	wake := q.ask(20, 10, false)
	if wake == nil {
		t.Fatal("q admitted past the limit while a holds the overdraft")
	}
	mustGrant("a's page, reserved", a.ask(80, 40, true))
	mustGrant("a flushed (buffer 80 -> 10)", a.ask(10, 40, false))
	if b.overdraft != nil {
		t.Fatal("overdraft kept after a flush")
	}
	select {
	case <-wake:
	default:
		t.Fatal("q not woken by a's flush")
	}
	mustGrant("q after a's flush", q.ask(20, 10, false))
	a.close()
	q.close()
	a.close()
	if b.used != 0 || len(b.shares) != 0 || b.waiters != 0 {
		t.Fatalf("after close: used %d, %d shares, %d waiters", b.used, len(b.shares), b.waiters)
	}
	var none *budgetShare
	if none.ask(1, 1, true) != nil {
		t.Fatal("nil share waits")
	}
	none.close()
}

// TestBudgetDeadlock is the deadlock case with real processors: four shards each take pages
// of one flush window that only closes when the buffer is full (100 records, three pages and
// a third), and the budget is smaller than one shard's partly filled buffer plus its next page.
// Every shard so waits while holding a window that needs more data. The overdraft lets them
// through one by one; every record is written, the objects (keys and bodies) are the same as
// with no budget, and the budget was really contended.
func TestBudgetDeadlock(t *testing.T) {
	const shards, pages, per = 4, 10, 30
	run := func(limit int64) (map[string][]byte, *memBudget, *Metrics) {
		dir := t.TempDir()
		st, err := objstore.Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig()
		cfg.Flush = FlushConfig{MaxRecords: 100, MaxBytes: 1 << 20, MaxAge: time.Hour}
		metrics, _ := NewMetrics(prometheus.NewRegistry())
		var stopping atomic.Bool
		s := &shared{cfg: cfg, stream: "budget", lease: alwaysHeld{}, ctx: context.Background(), stopping: &stopping, live: map[string]*processor{},
			deps: Deps{Store: st, Recommender: fakeRecommender{}, K: 5, Log: zap.NewNop(), Metrics: metrics}}
		if limit > 0 {
			s.budget = newMemBudget(limit, metrics)
		}
		arrival := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
		var wg sync.WaitGroup
		done := make(chan struct{})
		for i := range shards {
			p := s.CreateProcessor().(*processor)
			p.Initialize(&kcl.InitializationInput{ShardId: fmt.Sprintf("shardId-%012d", i)})
			wg.Add(1)
			go func() { // the library's consumer loop of one shard
				defer wg.Done()
				seq := 0
				for range pages {
					recs := make([]ktypes.Record, per)
					for j := range recs {
						seq++
						recs[j] = ktypes.Record{Data: event(i*1000+seq, "d"), SequenceNumber: aws.String(fmt.Sprintf("%020d", seq)),
							PartitionKey: aws.String("k"), ApproximateArrivalTimestamp: &arrival}
					}
					p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: nopCheckpointer{}})
					if p.state != stateActive {
						t.Errorf("shard %d: state %v", i, p.state)
						return
					}
				}
				p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: nopCheckpointer{}})
			}()
		}
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("shards still waiting for budget after 60 s: deadlock")
		}
		objs, err := st.List(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]byte{}
		for _, o := range objs {
			body, err := objstore.ReadAll(context.Background(), st, o.Key)
			if err != nil {
				t.Fatal(err)
			}
			out[o.Key] = body
		}
		return out, s.budget, metrics
	}
	want, _, _ := run(0)
	sample := make([]ktypes.Record, per)
	for j := range sample {
		sample[j].Data = event(j, "d")
	}
	one := pageCost(sample)
	limit := one * 2 // < one shard's 30 buffered records plus its next page
	got, b, m := run(limit)
	if len(want) != shards*pages*per/100 {
		t.Fatalf("unbounded run wrote %d objects, want %d", len(want), shards*pages*per/100)
	}
	if len(got) != len(want) {
		t.Fatalf("with the budget: %d objects, want %d (%v)", len(got), len(want), objectKeys(got))
	}
	for k, body := range want {
		if string(got[k]) != string(body) {
			t.Fatalf("object %s differs with the budget (or is missing)", k)
		}
	}
	var h dto.Metric
	if err := m.BudgetWait.Write(&h); err != nil {
		t.Fatal(err)
	}
	if h.GetHistogram().GetSampleCount() == 0 {
		t.Fatal("no shard ever waited: the budget was not contended, the test proves nothing")
	}
	if b.used != 0 {
		t.Fatalf("budget in use %d after every shard ended, want 0", b.used)
	}
	// One overdraft at a time: the peak stays within the limit plus about one full buffer and
	// its next page (the overdraft holder's), and a page of slack for the estimates.
	full := bufferCost(&buffer{n: 100, bytes: 100 * len(event(0, "d"))}, 5)
	if bound := limit + full + 2*one; b.peak > bound {
		t.Fatalf("peak %d bytes, want <= %d (limit %d + a full buffer %d + two pages %d)", b.peak, bound, limit, full, 2*one)
	}
	t.Logf("limit %d, peak %d, waits %d", limit, b.peak, h.GetHistogram().GetSampleCount())
}

func objectKeys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
