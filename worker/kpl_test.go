package worker

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kplrec "github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto" //nolint:staticcheck // the awslabs types are v1-API generated
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// aggregateOf builds a valid aggregate of n events of run, starting at event number from.
func aggregateOf(t testing.TB, run string, from, n int) []byte {
	t.Helper()
	data := make([][]byte, n)
	for i := range data {
		data[i] = event(from+i, run)
	}
	b, err := Aggregate("pk-"+run, data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expand expands a whole page at once (the processor expands one chunk at a time), with no
// practical bound on an aggregate's user records.
func expand(recs []ktypes.Record) []userRecord {
	var out []userRecord
	for _, r := range recs {
		out = append(out, expandRecord(r, 1<<20)...)
	}
	return out
}

// seal frames a protobuf body as an aggregate: magic, body, MD5.
func seal(body []byte) []byte {
	sum := md5.Sum(body)
	return append(append(append([]byte{}, kplMagic...), body...), sum[:]...)
}

// corruptAggregates are the kinds of broken KPL records a bad producer (or a bit flip) makes.
func corruptAggregates(t testing.TB) map[string][]byte {
	t.Helper()
	good := aggregateOf(t, "c", 0, 3)
	badMD5 := append([]byte{}, good...)
	badMD5[len(badMD5)-1] ^= 0xff
	idx := uint64(5)
	outOfRange, _ := proto.Marshal(&kplrec.AggregatedRecord{PartitionKeyTable: []string{"a"}, Records: []*kplrec.Record{{PartitionKeyIndex: &idx, Data: []byte("{}")}}})
	empty, _ := proto.Marshal(&kplrec.AggregatedRecord{PartitionKeyTable: []string{"a"}})
	zero := uint64(0)
	ehk, _ := proto.Marshal(&kplrec.AggregatedRecord{PartitionKeyTable: []string{"a"}, Records: []*kplrec.Record{{PartitionKeyIndex: &zero, ExplicitHashKeyIndex: &idx, Data: []byte("{}")}}})
	return map[string][]byte{
		"md5 mismatch":        badMD5,
		"bad protobuf":        seal([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}),
		"index out of range":  seal(outOfRange),
		"hash index of range": seal(ehk),
		"empty":               seal(empty),
		"too short":           append(append([]byte{}, kplMagic...), 1, 2, 3),
	}
}

func TestExpandAggregates(t *testing.T) {
	now := time.Now()
	rec := func(seq string, data []byte) ktypes.Record {
		return ktypes.Record{SequenceNumber: aws.String(seq), PartitionKey: aws.String("outer"), Data: data, ApproximateArrivalTimestamp: &now}
	}
	for _, n := range []int{1, 700, 5000} {
		t.Run(fmt.Sprintf("%d records", n), func(t *testing.T) {
			agg := aggregateOf(t, "x", 0, n)
			for _, data := range [][]byte{agg, wrap(envAggregate, agg)} { // raw and behind the middleware
				urs := expand([]ktypes.Record{rec("10", []byte(`{"plain":1}`)), rec("11", data), rec("12", []byte(`{}`))})
				if len(urs) != n+2 {
					t.Fatalf("%d user records, want %d", len(urs), n+2)
				}
				for i, u := range urs[1 : n+1] {
					if u.seq != "11" || u.sub != int64(i) || u.pk != "pk-x" || u.bad != nil || !bytes.Equal(u.data, event(i, "x")) ||
						u.first != (i == 0) || u.last != (i == n-1) {
						t.Fatalf("user record %d: %+v", i, u)
					}
				}
				if u := urs[0]; u.sub != 0 || !u.first || !u.last || string(u.data) != `{"plain":1}` {
					t.Fatalf("plain record %+v", u)
				}
			}
		})
	}
	for name, data := range corruptAggregates(t) {
		t.Run(name, func(t *testing.T) {
			urs := expand([]ktypes.Record{rec("20", data), rec("21", []byte(`{}`))})
			if len(urs) != 2 || urs[0].bad == nil || !bytes.Equal(urs[0].data, data) || urs[1].bad != nil {
				t.Fatalf("expand: %+v", urs)
			}
		})
	}
	// A plain record that starts with the envelope bytes comes through the middleware escaped.
	odd := append(append([]byte{}, envelope...), 'A', 'x')
	urs := expand([]ktypes.Record{rec("30", wrap(envPlain, odd))})
	if len(urs) != 1 || urs[0].bad != nil || !bytes.Equal(urs[0].data, odd) {
		t.Fatalf("escaped plain record: %+v", urs)
	}
}

// FuzzExpand: no input makes de-aggregation panic, and every user record comes out with a
// sequence number, whatever the bytes.
func FuzzExpand(f *testing.F) {
	f.Add(aggregateOf(f, "f", 0, 2))
	for _, b := range corruptAggregates(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		now := time.Now()
		for _, data := range [][]byte{b, wrap(envAggregate, b), append(append([]byte{}, kplMagic...), b...), seal(b)} {
			urs := expand([]ktypes.Record{{SequenceNumber: aws.String("1"), Data: data, ApproximateArrivalTimestamp: &now}})
			if len(urs) == 0 || !urs[0].first || !urs[len(urs)-1].last {
				t.Fatalf("expand(%q) = %+v", data, urs)
			}
		}
	})
}

// TestKPLAggregatesAtTheProcessor: every user record of an aggregate is written once with its
// sub-sequence number; a flush never ends inside an aggregate (even one larger than
// flush.max_records), so the checkpoint is always an aggregate's end; each corrupt aggregate
// is one bad_kpl_aggregate entry and its neighbours are written.
func TestKPLAggregatesAtTheProcessor(t *testing.T) {
	dir, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 100, MaxBytes: 64 << 20, MaxAge: time.Hour}
	e := newSeamEnv(t, cfg, dir, fakeRecommender{})
	var checkpoints []string
	cp := &funcCheckpointer{fn: func(seq *string) error {
		checkpoints = append(checkpoints, aws.ToString(seq))
		return nil
	}}
	payloads := [][]byte{event(0, "k"), aggregateOf(t, "k", 1, 700), event(701, "k")}
	corrupt := corruptAggregates(t)
	for _, name := range []string{"md5 mismatch", "bad protobuf", "index out of range", "empty"} {
		payloads = append(payloads, corrupt[name])
	}
	payloads = append(payloads, aggregateOf(t, "k", 702, 5000), aggregateOf(t, "k", 5702, 1), event(5703, "k"))
	batch := e.records(payloads...)
	e.p.ProcessRecords(&kcl.ProcessRecordsInput{Records: batch, Checkpointer: cp})
	e.p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: cp})
	aggSeq := aws.ToString(batch[1].SequenceNumber)
	bigSeq := aws.ToString(batch[7].SequenceNumber)
	for _, c := range checkpoints {
		if c == "" {
			continue // SHARD_END
		}
		for i, r := range batch {
			if aws.ToString(r.SequenceNumber) == c {
				break
			}
			if i == len(batch)-1 {
				t.Fatalf("checkpoint %s is not a Kinesis record's sequence number", c)
			}
		}
	}
	if len(checkpoints) < 3 || checkpoints[len(checkpoints)-1] != "" {
		t.Fatalf("checkpoints %v: want several flushes, then SHARD_END", checkpoints)
	}
	recs, errs, _ := readAll(t, dir)
	seen := map[string]int64{}
	for _, r := range recs {
		if _, dup := seen[r.SessionID]; dup {
			t.Fatalf("%s written twice", r.SessionID)
		}
		seen[r.SessionID] = r.SubSequenceNumber
	}
	if len(recs) != 5704 {
		t.Fatalf("%d records written, want 5704", len(recs))
	}
	for i := 1; i <= 700; i++ {
		if sub, ok := seen[fmt.Sprintf("k-%06d", i)]; !ok || sub != int64(i-1) {
			t.Fatalf("aggregated event %d: written %v with sub-sequence %d", i, ok, sub)
		}
	}
	for _, r := range recs {
		if r.SessionID == "k-000702" && (r.SequenceNumber != bigSeq || r.SubSequenceNumber != 0) ||
			r.SessionID == "k-000001" && r.SequenceNumber != aggSeq {
			t.Fatalf("record %+v", r)
		}
	}
	if len(errs) != 4 {
		t.Fatalf("%d errors/ entries, want 4 bad aggregates: %+v", len(errs), errs)
	}
	for _, er := range errs {
		if er.Reason != ReasonBadKPLAggregate || !strings.HasPrefix(er.Message, "kpl aggregate:") || len(er.PayloadBase64) == 0 {
			t.Fatalf("error entry %+v", er)
		}
	}
	// Keys are unique: 5,000 records of one aggregate in one object, not two objects under one key.
	objs, _ := dir.List(context.Background(), "")
	keys := map[string]bool{}
	for _, o := range objs {
		if keys[o.Key] {
			t.Fatalf("key %s twice", o.Key)
		}
		keys[o.Key] = true
	}
}

// funcCheckpointer records checkpoints through fn.
type funcCheckpointer struct{ fn func(*string) error }

func (c *funcCheckpointer) Checkpoint(seq *string) error { return c.fn(seq) }
func (c *funcCheckpointer) PrepareCheckpoint(*string) (kcl.IPreparedCheckpointer, error) {
	return nil, fmt.Errorf("not used")
}

// TestNoShardEndPastUnreadRecords: a processor told to stop while a closed shard's last batch
// arrives (or while it retries it) takes nothing more and must not write SHARD_END: the next
// owner reads those records and ends the shard.
func TestNoShardEndPastUnreadRecords(t *testing.T) {
	for _, during := range []string{"last batch", "retry"} {
		t.Run(during, func(t *testing.T) {
			dir, _ := objstore.Open(t.TempDir(), nil)
			fail := &failSwitch{}
			e := newSeamEnv(t, testConfig(), dir, fakeRecommender{fail: fail.failing})
			var checkpoints []string
			cp := &funcCheckpointer{fn: func(seq *string) error {
				checkpoints = append(checkpoints, fmt.Sprintf("%q", aws.ToString(seq)))
				return nil
			}}
			batch := e.records(event(1, "s"), event(2, "s"))
			if during == "last batch" {
				e.stopping.Store(true)
				e.p.ProcessRecords(&kcl.ProcessRecordsInput{Records: batch, Checkpointer: cp})
			} else {
				fail.on.Store(true)
				done := make(chan struct{})
				go func() {
					defer close(done)
					e.p.ProcessRecords(&kcl.ProcessRecordsInput{Records: batch, Checkpointer: cp})
				}()
				time.Sleep(200 * time.Millisecond) // a few retries happen meanwhile (nothing to wait for)
				e.stopping.Store(true)
				<-done
			}
			e.p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: cp})
			if len(checkpoints) != 0 {
				t.Fatalf("checkpoints %v written by a processor that skipped records", checkpoints)
			}
			if recs, errs, _ := readAll(t, dir); len(recs)+len(errs) != 0 {
				t.Fatalf("%d records written", len(recs))
			}
		})
	}
}

// TestHideAggregatesMiddleware: through a real kinesalite stream, the Kinesis client the
// worker hands the library returns aggregates enveloped (so the library's de-aggregation
// passes them through) and plain records untouched.
func TestHideAggregatesMiddleware(t *testing.T) {
	e := newTestEnv(t, 1)
	agg := aggregateOf(t, "m", 0, 10)
	e.put(t, [][]byte{event(100, "m"), agg, corruptAggregates(t)["index out of range"]})
	kc := withHiddenAggregates(e.kc)
	ctx := context.Background()
	it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(e.Stream), ShardId: aws.String("shardId-000000000000"), ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Records) != 3 || !bytes.Equal(out.Records[0].Data, event(100, "m")) ||
		!bytes.Equal(out.Records[1].Data, wrap(envAggregate, agg)) || !bytes.HasPrefix(out.Records[2].Data, envelope) {
		t.Fatalf("page through the middleware: %d records", len(out.Records))
	}
	urs := expand(out.Records)
	if len(urs) != 12 || urs[11].bad == nil {
		t.Fatalf("expanded %d user records (last bad: %v), want 12 with the corrupt aggregate bad", len(urs), urs[len(urs)-1].bad)
	}
}

// failSwitch makes fakeRecommender fail (an outage) while on is set.
type failSwitch struct{ on atomic.Bool }

func (f *failSwitch) failing() bool { return f.on.Load() }

// compactEvent is a small valid event (about 110 bytes), so that 5,000 fit in one KPL
// aggregate under Kinesis's 1 MiB record limit.
func compactEvent(i int, run string) []byte {
	return []byte(fmt.Sprintf(`{"session_id":"%s-%06d","customer_number":%d,"city":"c","country":"x","credit_limit":1,"browse_history":[]}`, run, i, i))
}

// TestKPLAggregatesUnderSIGKILL: a real stream written as KPL aggregates of 1, 700 and 5,000
// user records, with every kind of corrupt aggregate among them, is processed by worker
// processes killed with SIGKILL (between an upload and its checkpoint, and at random): every
// user record is written exactly once, each corrupt aggregate is one bad_kpl_aggregate entry,
// and no process panics.
func TestKPLAggregatesUnderSIGKILL(t *testing.T) {
	e := newTestEnv(t, 2)
	e.Cfg.Flush.MaxRecords = 900 // smaller than the big aggregates: a flush must still not split one
	next := 0
	var recs [][]byte
	for _, n := range []int{1, 700, 5000, 1, 700} {
		data := make([][]byte, n)
		for i := range data {
			data[i] = compactEvent(next, "a")
			next++
		}
		agg, err := Aggregate(fmt.Sprintf("pk-%d", next), data)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, agg, compactEvent(next, "a"))
		next++
	}
	corrupt := corruptAggregates(t)
	for _, b := range corrupt {
		recs = append(recs, b)
	}
	e.put(t, recs)
	// Kills between an upload and its checkpoint (the first flush of the first child; the
	// second of the next, unless it has nothing left to flush by then, when the test kills it),
	// then one at a moment chosen by the clock (whatever the child is doing then).
	for round, killAt := range []int{1, 2, 0} {
		cmd := startChild(t, e, fmt.Sprintf("a%d", round), killAt)
		if killAt == 0 {
			time.Sleep(e.Cfg.FailoverTime + 1500*time.Millisecond)
			_ = cmd.Process.Kill()
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(60 * time.Second):
			if round == 0 {
				t.Fatal("the first child never reached its first checkpoint")
			}
			_ = cmd.Process.Kill()
			err = <-done
		}
		if !killedBySIGKILL(err) {
			t.Fatalf("round %d: child ended with %v, want SIGKILL", round, err)
		}
	}
	cmd := startChild(t, e, "final", 0)
	e.waitExactlyOnce(t, "a", next, 120*time.Second)
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return len(e.read(t).errors) >= len(corrupt) }, "corrupt aggregates not in errors/")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, cmd, 30*time.Second); err != nil {
		t.Fatalf("final worker: %v", err)
	}
	o := e.read(t)
	if len(o.errors) != len(corrupt) {
		t.Fatalf("%d errors/ entries, want %d", len(o.errors), len(corrupt))
	}
	for _, er := range o.errors {
		if er.Reason != ReasonBadKPLAggregate {
			t.Fatalf("errors/ entry %+v", er)
		}
	}
}
