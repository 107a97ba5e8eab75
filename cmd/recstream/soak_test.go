//go:build soak

// The soak runs only when asked for (`make soak`, and 2 minutes of it in `make test`): it is a
// build tag rather than a skip, so `go test ./...` neither runs it nor reports it skipped.

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/faults"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
	"github.com/recstream/recstream/produce"
	"github.com/recstream/recstream/worker"
)

// The soak: TestSoak runs three `recstream worker` processes against the local stack with
// every dependency behind a fault proxy (internal/faults) and a seeded schedule of faults and
// SIGKILLs, while a producer sends a few hundred events per second. It builds only with the
// soak tag (`make soak`); SOAK_DURATION (default 2m) and SOAK_SEED pick the run.

// Targets of the schedule: the three AWS services, PostgreSQL, and the worker processes.
const (
	soakKinesis  = "kinesis"
	soakDynamoDB = "dynamodb"
	soakS3       = "s3"
	soakPostgres = "postgres"
	soakWorker   = "worker"

	soakKill faults.Kind = "sigkill" // the worker target's only kind: SIGKILL, restart after Dur
)

const (
	soakWorkers = 3
	soakShards  = 4
	soakRate    = 300 // events per second
)

// soakEpisode is one scheduled fault: kind on target from Start for Dur (after the soak's
// start). Rate is the share of requests that meet a per-request fault; Slot is the worker a
// SIGKILL hits.
type soakEpisode struct {
	Target string
	Kind   faults.Kind
	Start  time.Duration
	Dur    time.Duration
	Rate   float64
	Slot   int
}

func (e soakEpisode) String() string {
	s := fmt.Sprintf("%6.1fs %-8s %-20s %5.1fs", e.Start.Seconds(), e.Target, e.Kind, e.Dur.Seconds())
	switch {
	case e.Target == soakWorker:
		s += fmt.Sprintf(" worker %d", e.Slot)
	case e.Rate > 0:
		s += fmt.Sprintf(" rate %.2f", e.Rate)
	}
	return s
}

// soakSchedule is the seeded fault schedule between from and to: one lane per target, each
// cycling through a shuffled list of its fault kinds with random durations and gaps, so every
// kind occurs in a run of two minutes and lanes overlap like independent failures do. Worker
// slot 0 is never killed: the RSS and goroutine trend is measured on it.
func soakSchedule(seed uint64, from, to time.Duration) []soakEpisode {
	rng := rand.New(rand.NewPCG(seed, 0x50a6))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	httpKinds := func(s faults.Service) []faults.Kind { return append(faults.Kinds(s), faults.Blackout) }
	lanes := []struct {
		target string
		kinds  []faults.Kind
	}{
		{soakKinesis, httpKinds(faults.Kinesis)},
		{soakDynamoDB, httpKinds(faults.DynamoDB)},
		{soakS3, httpKinds(faults.S3)},
		{soakPostgres, []faults.Kind{faults.Cut, faults.Blackout}},
		{soakWorker, []faults.Kind{soakKill}},
	}
	var eps []soakEpisode
	for _, lane := range lanes {
		t := from + between(0, 3*time.Second)
		var bag []faults.Kind
		for {
			if len(bag) == 0 {
				bag = append([]faults.Kind(nil), lane.kinds...)
				rng.Shuffle(len(bag), func(i, j int) { bag[i], bag[j] = bag[j], bag[i] })
			}
			k := bag[0]
			bag = bag[1:]
			e := soakEpisode{Target: lane.target, Kind: k, Start: t}
			gap := between(2*time.Second, 5*time.Second)
			switch {
			case k == soakKill:
				e.Dur = between(time.Second, 5*time.Second) // down time before the restart
				e.Slot = 1 + rng.IntN(soakWorkers-1)
				gap = between(8*time.Second, 15*time.Second)
			case k == faults.Cut:
				e.Dur = 0
			case k == faults.Blackout:
				e.Dur = between(3*time.Second, 10*time.Second)
				gap = between(5*time.Second, 10*time.Second)
			case k == faults.LostAnswer:
				e.Dur, e.Rate = between(2*time.Second, 6*time.Second), 0.2+0.3*rng.Float64()
			default:
				e.Dur, e.Rate = between(2*time.Second, 6*time.Second), 0.3+0.4*rng.Float64()
			}
			if e.Start+e.Dur > to {
				break
			}
			eps = append(eps, e)
			t = e.Start + e.Dur + gap
		}
	}
	sort.SliceStable(eps, func(i, j int) bool { return eps[i].Start < eps[j].Start })
	return eps
}

// soakFailover is config.yaml's worker.failover_time, which the soak does not override: the
// recovery budget of an episode during which a lease had to move.
const soakFailover = 10 * time.Second

// soakIsolatedSchedule is the recovery schedule (SOAK_ISOLATED=1): every fault kind of every
// target once, one at a time, in a seeded order, with blackouts twice (shorter and longer than
// the lease time). Start is unused: each episode begins once the previous one has recovered.
func soakIsolatedSchedule(seed uint64) []soakEpisode {
	rng := rand.New(rand.NewPCG(seed, 0x150))
	var eps []soakEpisode
	for _, s := range []faults.Service{faults.Kinesis, faults.DynamoDB, faults.S3} {
		for _, k := range faults.Kinds(s) {
			rate := 0.5
			if k == faults.LostAnswer {
				rate = 0.3
			}
			eps = append(eps, soakEpisode{Target: string(s), Kind: k, Dur: 4 * time.Second, Rate: rate})
		}
		eps = append(eps,
			soakEpisode{Target: string(s), Kind: faults.Blackout, Dur: 4 * time.Second},
			soakEpisode{Target: string(s), Kind: faults.Blackout, Dur: soakFailover + 5*time.Second})
	}
	eps = append(eps,
		soakEpisode{Target: soakPostgres, Kind: faults.Cut},
		soakEpisode{Target: soakPostgres, Kind: faults.Blackout, Dur: 4 * time.Second},
		soakEpisode{Target: soakPostgres, Kind: faults.Blackout, Dur: soakFailover + 5*time.Second},
		soakEpisode{Target: soakWorker, Kind: soakKill, Dur: time.Second, Slot: 1 + rng.IntN(soakWorkers-1)})
	rng.Shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
	return eps
}

// TestSoakScheduleDeterministic: the same seed gives the same schedule, another seed another
// one, and a two-minute run meets every fault kind of every target.
func TestSoakScheduleDeterministic(t *testing.T) {
	a, b, c := soakSchedule(1, 5*time.Second, 95*time.Second), soakSchedule(1, 5*time.Second, 95*time.Second), soakSchedule(2, 5*time.Second, 95*time.Second)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("same seed, different schedules")
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatal("different seeds, same schedule")
	}
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		seen := map[string]bool{}
		for _, e := range soakSchedule(seed, 5*time.Second, 95*time.Second) {
			if e.Start < 5*time.Second || e.Start+e.Dur > 95*time.Second {
				t.Errorf("seed %d: episode outside the fault phase: %s", seed, e)
			}
			if e.Target == soakWorker && (e.Slot < 1 || e.Slot >= soakWorkers) {
				t.Errorf("seed %d: kills worker %d", seed, e.Slot)
			}
			seen[e.Target+"/"+string(e.Kind)] = true
		}
		for _, s := range []faults.Service{faults.Kinesis, faults.DynamoDB, faults.S3} {
			for _, k := range append(faults.Kinds(s), faults.Blackout) {
				if !seen[string(s)+"/"+string(k)] {
					t.Errorf("seed %d: no %s %s episode in a two-minute run", seed, s, k)
				}
			}
		}
		for _, k := range []string{"postgres/cut", "postgres/blackout", "worker/sigkill"} {
			if !seen[k] {
				t.Errorf("seed %d: no %s episode", seed, k)
			}
		}
	}
}

// TestSoakIsolatedSchedule: the recovery schedule has every kind of every target once, the
// blackouts once shorter and once longer than the lease time, and is seeded.
func TestSoakIsolatedSchedule(t *testing.T) {
	a, b := soakIsolatedSchedule(1), soakIsolatedSchedule(2)
	if fmt.Sprint(a) == fmt.Sprint(b) {
		t.Error("different seeds, same order")
	}
	count := map[string]int{}
	long := map[string]bool{}
	for _, e := range a {
		k := e.Target + "/" + string(e.Kind)
		count[k]++
		if e.Kind == faults.Blackout && e.Dur > soakFailover {
			long[e.Target] = true
		}
	}
	for _, s := range []faults.Service{faults.Kinesis, faults.DynamoDB, faults.S3} {
		for _, k := range faults.Kinds(s) {
			if count[string(s)+"/"+string(k)] != 1 {
				t.Errorf("%s %s: %d episodes, want 1", s, k, count[string(s)+"/"+string(k)])
			}
		}
	}
	for _, target := range []string{soakKinesis, soakDynamoDB, soakS3, soakPostgres} {
		if count[target+"/blackout"] != 2 || !long[target] {
			t.Errorf("%s: %d blackouts (one longer than the lease time: %v), want 2 and true", target, count[target+"/blackout"], long[target])
		}
	}
	if count["postgres/cut"] != 1 || count["worker/sigkill"] != 1 {
		t.Errorf("postgres cut %d, sigkill %d, want 1 each", count["postgres/cut"], count["worker/sigkill"])
	}
}

// soakSample is one /metrics reading of a worker process.
type soakSample struct {
	at         time.Time
	rss        float64
	goroutines float64
	leases     float64
}

// soakProc is one worker process (a slot's generation: a restart is a new soakProc).
type soakProc struct {
	slot, gen int
	cmd       *exec.Cmd
	metrics   string
	logPath   string
	started   time.Time
	killed    atomic.Bool // SIGKILLed or SIGTERMed by the soak
	done      chan struct{}
	exitCode  int
	exitedAt  time.Time

	mu      sync.Mutex
	samples []soakSample
}

// soakFleet runs the worker processes and samples their metrics.
type soakFleet struct {
	t      *testing.T
	bin    string
	config string
	env    []string
	logDir string

	mu         sync.Mutex
	live       [soakWorkers]*soakProc
	all        []*soakProc
	unexpected []*soakProc          // exited on their own
	ckpt       map[string][]float64 // shard → checkpoint timestamps seen (unsorted, deduplicated)
	ckptSeen   map[string]map[float64]bool
	stopping   bool
}

func (f *soakFleet) start(slot int) *soakProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		return nil
	}
	gen := 0
	for _, p := range f.all {
		if p.slot == slot {
			gen++
		}
	}
	p := &soakProc{slot: slot, gen: gen, metrics: freePort(f.t), done: make(chan struct{}),
		logPath: filepath.Join(f.logDir, fmt.Sprintf("worker-%d-%d.log", slot, gen))}
	logf, err := os.Create(p.logPath)
	if err != nil {
		f.t.Errorf("soak: %v", err)
		return nil
	}
	p.cmd = exec.Command(f.bin, "--config", f.config, "--log-format", "json", "worker")
	p.cmd.Env = append(append([]string(nil), f.env...), "RECSTREAM_METRICS_LISTEN="+p.metrics)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		f.t.Errorf("soak: start worker %d: %v", slot, err)
		return nil
	}
	p.started = time.Now()
	f.live[slot] = p
	f.all = append(f.all, p)
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		f.mu.Lock()
		p.exitCode, p.exitedAt = p.cmd.ProcessState.ExitCode(), time.Now()
		if f.live[slot] == p {
			f.live[slot] = nil
		}
		own := !p.killed.Load()
		if own {
			f.unexpected = append(f.unexpected, p)
		}
		restart := own && !f.stopping
		f.mu.Unlock()
		close(p.done)
		if restart {
			// As ECS would: a worker that died on its own is replaced (and reported), after a
			// pause so that a worker failing at start does not spin.
			time.Sleep(2 * time.Second)
			f.start(slot)
		}
	}()
	return p
}

// kill SIGKILLs slot's process and waits until it is gone.
func (f *soakFleet) kill(slot int) {
	f.mu.Lock()
	p := f.live[slot]
	f.mu.Unlock()
	if p == nil {
		return
	}
	p.killed.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		f.t.Errorf("soak: worker %d (pid %d) still running 30 s after SIGKILL", slot, p.cmd.Process.Pid)
	}
}

// stop SIGTERMs every live worker and returns those that did not exit 0 within 45 s.
func (f *soakFleet) stop() []string {
	f.mu.Lock()
	if f.stopping {
		f.mu.Unlock()
		return nil
	}
	f.stopping = true
	live := append([]*soakProc(nil), f.live[:]...)
	f.mu.Unlock()
	var bad []string
	for _, p := range live {
		if p == nil {
			continue
		}
		p.killed.Store(true)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range live {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
			if p.exitCode != 0 {
				bad = append(bad, fmt.Sprintf("worker %d.%d exited %d after SIGTERM (log %s)", p.slot, p.gen, p.exitCode, p.logPath))
			}
		case <-time.After(45 * time.Second):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
			bad = append(bad, fmt.Sprintf("worker %d.%d did not exit within 45 s of SIGTERM (log %s)", p.slot, p.gen, p.logPath))
		}
	}
	return bad
}

func (f *soakFleet) liveProcs() []*soakProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*soakProc
	for _, p := range f.live {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// parseMetrics reads Prometheus text: series (name with labels, as printed) → value.
func parseMetrics(body string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sample reads every live worker's /metrics once.
func (f *soakFleet) sample(client *http.Client) {
	for _, p := range f.liveProcs() {
		resp, err := client.Get("http://" + p.metrics + "/metrics")
		if err != nil {
			continue // starting, or killed meanwhile
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			continue
		}
		m := parseMetrics(string(b))
		p.mu.Lock()
		p.samples = append(p.samples, soakSample{at: time.Now(), rss: m["process_resident_memory_bytes"], goroutines: m["go_goroutines"], leases: m["recstream_worker_leases_held"]})
		p.mu.Unlock()
		f.mu.Lock()
		for series, v := range m {
			shard, ok := strings.CutPrefix(series, `recstream_worker_last_checkpoint_timestamp_seconds{shard_id="`)
			if !ok || v == 0 {
				continue
			}
			shard = strings.TrimSuffix(shard, `"}`)
			if f.ckptSeen[shard] == nil {
				f.ckptSeen[shard] = map[float64]bool{}
			}
			if !f.ckptSeen[shard][v] {
				f.ckptSeen[shard][v] = true
				f.ckpt[shard] = append(f.ckpt[shard], v)
			}
		}
		f.mu.Unlock()
	}
}

// recovery is the time from end until every shard has checkpointed after it (the latest
// shard's first checkpoint after end); ok is false when some shard never did.
func (f *soakFleet) recovery(end time.Time, shards []string) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := float64(end.UnixNano()) / 1e9
	worst := 0.0
	for _, s := range shards {
		first := math.Inf(1)
		for _, v := range f.ckpt[s] {
			if v > e && v < first {
				first = v
			}
		}
		if math.IsInf(first, 1) {
			return 0, false
		}
		worst = max(worst, first-e)
	}
	return time.Duration(worst * float64(time.Second)), true
}

// soakRecorder is the producer's Kinesis client: it records which events the stream accepted,
// split into valid ones (the worker's decoder accepts them: they must be in the output once)
// and invalid ones (they must be in errors/ once). The partition key is the session id.
type soakRecorder struct {
	kc  *kinesis.Client
	lim worker.Limits

	stopped atomic.Bool // set: refuse new calls (the producer is being stopped)

	mu      sync.Mutex
	valid   map[string]bool
	invalid map[string]bool
}

func (r *soakRecorder) PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	if r.stopped.Load() {
		return nil, context.Canceled
	}
	// Not cancelled with the producer: a call under way completes and is recorded, so no event
	// reaches the stream unrecorded.
	out, err := r.kc.PutRecords(context.WithoutCancel(ctx), in, opts...)
	if err != nil {
		return out, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, rec := range out.Records {
		if rec.ErrorCode != nil || i >= len(in.Records) {
			continue
		}
		id := aws.ToString(in.Records[i].PartitionKey)
		if _, err := worker.Decode(in.Records[i].Data, r.lim); err == nil {
			r.valid[id] = true
		} else {
			r.invalid[id] = true
		}
	}
	return out, nil
}

// soakOutput reads the worker's output objects, each key once (they are written once and
// replaced only by identical replays); reread starts over.
type soakOutput struct {
	store   objstore.Store
	read    map[string]bool
	records map[string]int // session id → times written
	errors  map[string]int // partition key (session id) of rejected records → times
}

func (o *soakOutput) update(ctx context.Context, reread bool) error {
	if reread || o.read == nil {
		o.read, o.records, o.errors = map[string]bool{}, map[string]int{}, map[string]int{}
	}
	objs, err := o.store.List(ctx, "")
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if o.read[obj.Key] {
			continue
		}
		b, err := objstore.ReadAll(ctx, o.store, obj.Key)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(obj.Key, worker.ErrorsPrefix+"/"):
			ers, err := worker.DecodeErrorObject(b)
			if err != nil {
				return fmt.Errorf("%s: %w", obj.Key, err)
			}
			for _, er := range ers {
				o.errors[er.PartitionKey]++
			}
		case strings.HasSuffix(obj.Key, ".parquet"):
			recs, err := worker.DecodeObject("parquet", b)
			if err != nil {
				return fmt.Errorf("%s: %w", obj.Key, err)
			}
			for _, r := range recs {
				o.records[r.SessionID]++
			}
		default:
			continue
		}
		o.read[obj.Key] = true
	}
	return nil
}

func soakDuration(t *testing.T) (time.Duration, uint64) {
	t.Helper()
	ds := os.Getenv("SOAK_DURATION")
	if ds == "" {
		ds = "2m"
	}
	d, err := time.ParseDuration(ds)
	if err != nil || d < time.Minute {
		t.Fatalf("SOAK_DURATION=%q: want a duration of at least 1m", ds)
	}
	seed := uint64(1)
	if s := os.Getenv("SOAK_SEED"); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", s, err)
		}
	}
	return d, seed
}

// TestSoak: three worker processes, faults and SIGKILLs on a seeded schedule, a producer at
// soakRate events/s for SOAK_DURATION; then faults off and a drain. It checks: every valid
// event exactly once in the output and none in errors/ (every invalid one in errors/ once), no
// worker exited unless the soak killed it, every worker exits 0 on SIGTERM at the end, the
// never-killed worker's RSS and goroutines are flat (last fifth of the run within 10% of the
// middle fifth), and every fault episode is followed by every shard checkpointing again. It
// prints one line per fault (target, kind, episodes, requests that met it, max recovery).
func TestSoak(t *testing.T) {
	dur, seed := soakDuration(t)
	stacktest.SetAWSEnv(t)
	ctx := context.Background()
	kinesisEP := stacktest.Endpoint(t, "kinesis")
	dynamoEP := stacktest.Endpoint(t, "dynamodb")
	s3EP := stacktest.Endpoint(t, "s3")
	pgDSN := stacktest.Value(t, "postgres.dsn")
	cc, err := pgx.ParseConfig(pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	pgAddr := fmt.Sprintf("%s:%d", cc.Host, cc.Port)
	stacktest.Require(t, "PostgreSQL", pgAddr)

	logDir := filepath.Join(stacktest.RepoRoot(), "out", "soak", fmt.Sprintf("seed-%d", seed))
	if err := os.RemoveAll(logDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: seed %d, %s; worker logs in %s", seed, dur, logDir)

	// The real binary, so that SIGKILL kills a process.
	bin := filepath.Join(t.TempDir(), "recstream")
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	if out, err := exec.CommandContext(bctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		cancel()
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cancel()
	// The workers read a copy of config.yaml taken with the binary: restarts late in a long run
	// must not meet a checkout that moved on meanwhile.
	cfgCopy := filepath.Join(filepath.Dir(bin), "config.yaml")
	if b, err := os.ReadFile("../../config.yaml"); err != nil || os.WriteFile(cfgCopy, b, 0o644) != nil {
		t.Fatalf("copy config.yaml: %v", err)
	}

	// An isolated deployment: stream, lease table, schema, artifacts, output prefix.
	stream := stacktest.UniqueName("rs-soak-")
	schema := strings.ReplaceAll(stacktest.UniqueName("rs_soak_"), "-", "_")
	out := stacktest.S3Store(t, "recommendations", "soak-")
	arts := t.TempDir()
	env := append(os.Environ(),
		"RECSTREAM_POSTGRES_PASSWORD="+stacktest.DBPassword("RECSTREAM_POSTGRES_PASSWORD"),
		"RECSTREAM_POSTGRES_SCHEMA="+schema,
		"RECSTREAM_KINESIS_STREAM="+stream,
		"RECSTREAM_DYNAMODB_LEASE_TABLE="+stream,
		"RECSTREAM_S3_BUCKETS_ARTIFACTS=file://"+arts,
		"RECSTREAM_S3_BUCKETS_RECOMMENDATIONS="+strings.TrimSuffix(out.URL(""), "/"),
	)
	t.Cleanup(func() {
		conn, err := pgx.ConnectConfig(context.Background(), cc.Copy())
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			conn.Close(context.Background())
		}
	})
	runCLI(t, env, "train", "--csv", stacktest.LabFile(t, "ratings_ml_training_dataset.csv"), "--epochs", "3")
	runCLI(t, env, "batch", "embeddings")

	kc, err := awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: stream, Shards: soakShards, Region: "us-east-1", Endpoint: kinesisEP})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.CreateStream(t, kc, stream, soakShards)
	ddb, err := awsenv.DynamoDB(ctx, awsenv.DynamoDBConfig{LeaseTable: stream, Region: "us-east-1", Endpoint: dynamoEP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(stream)})
	})
	shardList, err := awsenv.ListShards(ctx, kc, stream)
	if err != nil {
		t.Fatal(err)
	}
	var shards []string
	for _, s := range shardList {
		shards = append(shards, aws.ToString(s.ShardId))
	}

	// The fault proxies; the workers reach every dependency through them.
	httpProxies := map[string]*faults.HTTPProxy{}
	for i, s := range []struct {
		target string
		svc    faults.Service
		ep     string
	}{{soakKinesis, faults.Kinesis, kinesisEP}, {soakDynamoDB, faults.DynamoDB, dynamoEP}, {soakS3, faults.S3, s3EP}} {
		p, err := faults.NewHTTP(s.svc, s.ep, seed*10+uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		httpProxies[s.target] = p
	}
	pgProxy, err := faults.NewTCP(pgAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pgProxy.Close() })
	fleet := &soakFleet{t: t, bin: bin, config: cfgCopy, logDir: logDir, ckpt: map[string][]float64{}, ckptSeen: map[string]map[float64]bool{},
		env: append(env,
			"RECSTREAM_KINESIS_ENDPOINT="+httpProxies[soakKinesis].URL(),
			"RECSTREAM_DYNAMODB_ENDPOINT="+httpProxies[soakDynamoDB].URL(),
			"RECSTREAM_S3_ENDPOINT="+httpProxies[soakS3].URL(),
			"RECSTREAM_POSTGRES_DSN="+strings.Replace(pgDSN, pgAddr, pgProxy.Addr(), 1),
			"RECSTREAM_WORKER_FLUSH_MAX_AGE=1s",
			"RECSTREAM_WORKER_RETRY_MAX_BACKOFF=2s",
			"RECSTREAM_WORKER_STATUS_INTERVAL=10s",
		)}
	defer fleet.stop()
	for slot := range soakWorkers {
		fleet.start(slot)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	stacktest.Eventually(t, 3*time.Minute, 500*time.Millisecond, func() bool {
		for _, p := range fleet.liveProcs() {
			resp, err := client.Get("http://" + p.metrics + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return len(fleet.liveProcs()) == soakWorkers
	}, "the %d workers never became ready (logs in %s)", soakWorkers, logDir)

	// The run: producer, metrics sampler, fault schedule.
	faultFrom, faultTo := 5*time.Second, max(dur-25*time.Second, dur/2)
	isolatedMode := os.Getenv("SOAK_ISOLATED") == "1"
	schedule := soakSchedule(seed, faultFrom, faultTo)
	prodDur := dur
	if isolatedMode {
		// One fault at a time, each after the previous one recovered: the producer runs until
		// the last episode is over.
		schedule, prodDur = soakIsolatedSchedule(seed), 24*time.Hour
	}
	var sched strings.Builder
	for _, e := range schedule {
		fmt.Fprintln(&sched, e)
	}
	_ = os.WriteFile(filepath.Join(logDir, "schedule.txt"), []byte(sched.String()), 0o644)
	t0 := time.Now()

	rec := &soakRecorder{kc: kc, valid: map[string]bool{}, invalid: map[string]bool{},
		lim: worker.Limits{MaxBytes: worker.DefaultConfig().MaxEventBytes, MaxBrowseHistory: worker.DefaultConfig().MaxBrowseHistory}}
	gen, err := produce.NewGenerator(produce.GenConfig{Seed: seed, BadRatio: 0.02, UnseenRatio: 0.2}, soakCatalog())
	if err != nil {
		t.Fatal(err)
	}
	prod, err := produce.New(produce.Config{Stream: stream, Rate: soakRate, Duration: prodDur}, gen, rec, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	prodDone := make(chan error, 1)
	prodCtx, stopProd := context.WithCancel(ctx)
	defer stopProd()
	go func() {
		_, err := prod.Run(prodCtx)
		prodDone <- err
	}()

	samplerCtx, stopSampler := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			fleet.sample(client)
			select {
			case <-samplerCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stopSampler(); <-samplerDone }()

	// apply turns episode e on (or, with end, off).
	apply := func(e soakEpisode, end bool) {
		switch e.Target {
		case soakWorker:
			if !end {
				fleet.kill(e.Slot)
			} else {
				fleet.start(e.Slot)
			}
		case soakPostgres:
			switch {
			case e.Kind == faults.Cut && !end:
				pgProxy.Cut()
			case e.Kind == faults.Blackout:
				pgProxy.SetBlackout(!end)
			}
		default:
			p := httpProxies[e.Target]
			switch {
			case e.Kind == faults.Blackout:
				p.SetBlackout(!end)
			case end:
				p.SetRate(e.Kind, 0)
			default:
				p.SetRate(e.Kind, e.Rate)
			}
		}
	}
	var done []soakHappened
	var isolated []soakIsolatedResult
	if isolatedMode {
		isolated = runIsolated(t, fleet, schedule, apply, httpProxies, shards)
		for _, r := range isolated {
			done = append(done, r.happened)
		}
	} else {
		// The schedule runs on wall-clock offsets from t0: the episodes' actual end times are
		// kept for the recovery measurement.
		type step struct {
			at  time.Duration
			ep  int
			end bool
		}
		var steps []step
		for i, e := range schedule {
			steps = append(steps, step{e.Start, i, false}, step{e.Start + e.Dur, i, true})
		}
		sort.SliceStable(steps, func(i, j int) bool { return steps[i].at < steps[j].at })
		began := make([]time.Time, len(schedule))
		for _, s := range steps {
			if d := time.Until(t0.Add(s.at)); d > 0 {
				time.Sleep(d) // the schedule's clock, not a wait for a condition
			}
			e := schedule[s.ep]
			if !s.end {
				began[s.ep] = time.Now()
			}
			apply(e, s.end)
			if s.end {
				done = append(done, soakHappened{e, began[s.ep], time.Now()})
			}
		}
	}
	for _, p := range httpProxies {
		p.ClearRates()
		p.SetBlackout(false)
	}
	pgProxy.SetBlackout(false)
	t.Logf("soak: fault phase over after %s (%d episodes); producing until %s", time.Since(t0).Round(time.Second), len(done), dur)
	if isolatedMode {
		faultTo = time.Since(t0)
		stopProd()
		rec.stopped.Store(true) // no new PutRecords; one in flight completes and is recorded
	}

	var prodErr error
	select {
	case prodErr = <-prodDone:
	case <-time.After(time.Until(t0.Add(faultTo + dur + 2*time.Minute))):
		prodErr = fmt.Errorf("producer still running 2 min after its %s", dur)
	}
	if prodErr != nil {
		t.Errorf("producer: %v", prodErr)
	}
	tRun := time.Now()
	rec.mu.Lock()
	nValid, nInvalid := len(rec.valid), len(rec.invalid)
	rec.mu.Unlock()
	t.Logf("soak: produced %d valid and %d invalid events; draining", nValid, nInvalid)

	// Drain: wait (bounded) until every valid event is written and every invalid one rejected.
	o := &soakOutput{store: out}
	drainBy := time.Now().Add(4 * time.Minute)
	for {
		err := o.update(ctx, false)
		if err == nil {
			missing := 0
			for id := range rec.valid {
				if o.records[id] == 0 {
					missing++
				}
			}
			rejected := 0
			for id := range rec.invalid {
				if o.errors[id] > 0 {
					rejected++
				}
			}
			if missing == 0 && rejected == nInvalid {
				break
			}
			if time.Now().After(drainBy) {
				t.Errorf("drain: after 4 min, %d of %d valid events missing from the output, %d of %d invalid ones in errors/", missing, nValid, rejected, nInvalid)
				break
			}
		} else if time.Now().After(drainBy) {
			t.Errorf("drain: reading the output: %v", err)
			break
		}
		time.Sleep(2 * time.Second) // poll interval of the bounded wait above
	}
	t.Logf("soak: drained %s after the producer stopped", time.Since(tRun).Round(time.Second))
	// The emulators keep everything in memory: one restarted during the soak (by a crash or by
	// someone else) voids the run, which the failures above would not say.
	if _, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(stream)}); err != nil {
		t.Errorf("the lease table is gone (%v): DynamoDB (dynalite) restarted during the soak; the results are void", err)
	}
	if _, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)}); err != nil {
		t.Errorf("the stream is gone (%v): Kinesis (kinesalite) restarted during the soak; the results are void", err)
	}

	// Recovery per episode, measured before the workers stop.
	shardsOK := true
	type row struct {
		episodes int
		maxRec   time.Duration
		never    int
	}
	rows := map[string]*row{}
	var notRecovered []string
	for _, h := range done {
		key := h.ep.Target + "\t" + string(h.ep.Kind)
		r := rows[key]
		if r == nil {
			r = &row{}
			rows[key] = r
		}
		r.episodes++
		rd, ok := fleet.recovery(h.to, shards)
		if !ok {
			r.never++
			shardsOK = false
			notRecovered = append(notRecovered, fmt.Sprintf("%s (ended %.1fs)", h.ep, h.to.Sub(t0).Seconds()))
			continue
		}
		r.maxRec = max(r.maxRec, rd)
	}

	stopSampler()
	<-samplerDone
	if bad := fleet.stop(); len(bad) > 0 {
		for _, b := range bad {
			t.Errorf("shutdown: %s", b)
		}
	}

	// Exactly once.
	if err := o.update(ctx, true); err != nil {
		t.Fatalf("read the output: %v", err)
	}
	var missing, dups, validRejected, unknown, invalidMissing, invalidDup []string
	for id := range rec.valid {
		switch n := o.records[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			dups = append(dups, fmt.Sprintf("%s×%d", id, n))
		}
		if o.errors[id] > 0 {
			validRejected = append(validRejected, id)
		}
	}
	for id := range o.records {
		if !rec.valid[id] {
			unknown = append(unknown, id)
		}
	}
	for id := range rec.invalid {
		switch n := o.errors[id]; {
		case n == 0:
			invalidMissing = append(invalidMissing, id)
		case n > 1:
			invalidDup = append(invalidDup, fmt.Sprintf("%s×%d", id, n))
		}
	}
	for _, c := range []struct {
		what string
		ids  []string
	}{
		{"valid events missing from the output", missing},
		{"valid events written more than once", dups},
		{"valid events in errors/", validRejected},
		{"output records of events never produced", unknown},
		{"invalid events missing from errors/", invalidMissing},
		{"invalid events in errors/ more than once", invalidDup},
	} {
		if len(c.ids) > 0 {
			sort.Strings(c.ids)
			t.Errorf("%d %s (of %d valid, %d invalid), e.g. %v", len(c.ids), c.what, nValid, nInvalid, c.ids[:min(len(c.ids), 8)])
		}
	}

	// Workers that exited on their own.
	fleet.mu.Lock()
	unexpected := append([]*soakProc(nil), fleet.unexpected...)
	all := append([]*soakProc(nil), fleet.all...)
	fleet.mu.Unlock()
	for _, p := range unexpected {
		t.Errorf("worker %d.%d exited on its own with code %d at %.1fs (started %.1fs); last log lines of %s:\n%s",
			p.slot, p.gen, p.exitCode, p.exitedAt.Sub(t0).Seconds(), p.started.Sub(t0).Seconds(), p.logPath, tail(p.logPath, 8))
	}

	// A worker whose KCL worker failed to start (the library cannot describe the lease table
	// during a DynamoDB fault) must retry the start like every start-up step (worker.Run), and
	// run once the faults are over: never live on serving /healthz while it processes nothing.
	for _, p := range all {
		fails := soakLogTimes(p.logPath, "Failed to initialize Worker")
		if len(fails) == 0 {
			continue
		}
		last := fails[len(fails)-1]
		retried := soakLogAfter(p.logPath, "dependency unavailable at start-up, retrying", last)
		started := soakLogAfter(p.logPath, "worker started", last)
		killedRightAway := !p.exitedAt.IsZero() && p.exitedAt.Sub(last) < time.Second
		switch {
		case !retried && !started && !killedRightAway:
			t.Errorf("worker %d.%d failed to start its KCL worker at %.1fs and never retried (log %s)",
				p.slot, p.gen, last.Sub(t0).Seconds(), p.logPath)
		case p.exitedAt.IsZero() && !started:
			t.Errorf("worker %d.%d failed to start its KCL worker at %.1fs and had not started at the end, faults long over (log %s)",
				p.slot, p.gen, last.Sub(t0).Seconds(), p.logPath)
		}
	}

	// RSS and goroutines: flat over the fault phase for every worker alive through it.
	for _, p := range all {
		if p.started.After(t0) || (!p.exitedAt.IsZero() && p.exitedAt.Before(tRun)) {
			continue
		}
		p.mu.Lock()
		samples := append([]soakSample(nil), p.samples...)
		p.mu.Unlock()
		// The span is the fault phase: both fifths see the same mix of faults and traffic (after
		// it, the catch-up runs more connections at once).
		span := faultTo
		window := func(from, to float64) (rss, gor, leases []float64) {
			for _, s := range samples {
				x := s.at.Sub(t0)
				if x >= time.Duration(from*float64(span)) && x < time.Duration(to*float64(span)) {
					rss, gor, leases = append(rss, s.rss), append(gor, s.goroutines), append(leases, s.leases)
				}
			}
			return
		}
		var csv strings.Builder
		csv.WriteString("seconds,rss_bytes,goroutines,leases_held\n")
		for _, s := range samples {
			fmt.Fprintf(&csv, "%.1f,%.0f,%.0f,%.0f\n", s.at.Sub(t0).Seconds(), s.rss, s.goroutines, s.leases)
		}
		_ = os.WriteFile(filepath.Join(logDir, fmt.Sprintf("samples-%d-%d.csv", p.slot, p.gen)), []byte(csv.String()), 0o644)
		mr, mg, ml := window(0.4, 0.6)
		lr, lg, ll := window(0.8, 1.0)
		if len(mr) < 3 || len(lr) < 3 {
			t.Errorf("worker %d.%d: too few metric samples (%d, %d) for the trend", p.slot, p.gen, len(mr), len(lr))
			continue
		}
		// Growth is what a leak shows: the last fifth may exceed the middle one by 10% plus a
		// small absolute slack, the noise of a 2-minute run: the GC's heap target (4 MiB), and
		// HTTP connections coming and going under faults, two goroutines each (8: a 7-minute
		// run's per-minute floor at a constant lease count ranged 15-23, with no trend). A leak
		// of one goroutine per fault episode (about 50 in 2 minutes) is well above it.
		type check struct {
			what         string
			middle, last float64
			slack        float64
		}
		checks := []check{{"RSS (MiB)", median(mr) / (1 << 20), median(lr) / (1 << 20), 4}}
		// A worker runs goroutines per shard it holds: goroutines are compared between samples
		// with the same number of leases held (the most common count of the last fifth that the
		// middle fifth also has). Each open HTTP or database connection has goroutines too, and
		// faults make connections come and go: the floor of each window (its minimum) is what
		// a leak raises.
		if mg, lg, ok := sameLeases(mg, ml, lg, ll); ok {
			checks = append(checks, check{"goroutines (minimum)", slices.Min(mg), slices.Min(lg), 8})
		} else {
			t.Logf("worker %d.%d: goroutines not compared: leases held differ in every sample of the two fifths", p.slot, p.gen)
		}
		for _, c := range checks {
			t.Logf("worker %d.%d %s: middle fifth %.1f, last fifth %.1f (leases held %.0f → %.0f)", p.slot, p.gen, c.what, c.middle, c.last, median(ml), median(ll))
			if c.last > c.middle*1.10+c.slack {
				t.Errorf("worker %d.%d: %s grows: middle fifth %.1f, last fifth %.1f, more than 10%% + %.0f (leases held %.0f → %.0f)", p.slot, p.gen, c.what, c.middle, c.last, c.slack, median(ml), median(ll))
			}
		}
	}

	// The per-fault table.
	var tb strings.Builder
	tw := tabwriter.NewWriter(&tb, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "target\tfault\tseed\tepisodes\trequests hit\tmax recovery\n")
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r := rows[k]
		target, kind, _ := strings.Cut(k, "\t")
		hit := "-"
		if p := httpProxies[target]; p != nil {
			counts, _ := p.Counts()
			hit = strconv.Itoa(counts[faults.Kind(kind)])
		}
		rec := r.maxRec.Round(100 * time.Millisecond).String()
		if r.never > 0 {
			rec = fmt.Sprintf("NEVER (%d of %d)", r.never, r.episodes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", target, kind, seed, r.episodes, hit, rec)
	}
	tw.Flush()
	if isolatedMode {
		tb.WriteString("\none fault at a time (recovery: fault end, or the kill, until every shard checkpointed again):\n")
		tw = tabwriter.NewWriter(&tb, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "target\tfault\tlength\trequests hit\tlease moved\trecovery\tbudget\n")
		for _, r := range isolated {
			rec := r.recovery.Round(100 * time.Millisecond).String()
			if !r.recovered {
				rec = "NEVER"
			}
			hit := "-"
			if httpProxies[r.happened.ep.Target] != nil {
				hit = strconv.Itoa(r.hit)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", r.happened.ep.Target, r.happened.ep.Kind,
				r.happened.to.Sub(r.happened.from).Round(100*time.Millisecond), hit, r.moved, rec, r.budget())
			if !r.recovered || r.recovery > r.budget() {
				t.Errorf("recovery after %s: %s, budget %s (lease moved: %v)", r.happened.ep, rec, r.budget(), r.moved)
			}
		}
		tw.Flush()
	}
	summary := fmt.Sprintf("soak seed %d, %s: %d valid + %d invalid events, %d worker processes (%d killed by the soak, %d exited on their own)\n%s\n%s\n%s",
		seed, dur, nValid, nInvalid, len(all), soakKills(schedule), len(unexpected), tb.String(), soakLogSummary(logDir), soakLeaseEvents(logDir, t0, done))
	_ = os.WriteFile(filepath.Join(logDir, "report.txt"), []byte(summary), 0o644)
	t.Log("\n" + summary)
	if !shardsOK {
		t.Errorf("shards that never checkpointed again after a fault: %v", notRecovered)
	}
}

// soakIsolatedResult is one episode of the recovery schedule as it ran: the requests its fault
// met, whether a lease moved, and the time from the fault's end until every shard had
// checkpointed again (for a SIGKILL, from the kill: the survivors must take the leases over).
type soakIsolatedResult struct {
	happened  soakHappened
	hit       int
	moved     bool
	recovery  time.Duration
	recovered bool
}

// budget is the recovery the issue allows: 5 s, or failover_time + 5 s where a lease moved.
func (r soakIsolatedResult) budget() time.Duration {
	if r.moved {
		return soakFailover + 5*time.Second
	}
	return 5 * time.Second
}

// runIsolated runs the recovery schedule: each episode on a fleet that has recovered from the
// previous one, then a bounded wait until every shard has checkpointed after the fault, polled
// from the workers' metrics.
func runIsolated(t *testing.T, fleet *soakFleet, schedule []soakEpisode, apply func(soakEpisode, bool),
	proxies map[string]*faults.HTTPProxy, shards []string) []soakIsolatedResult {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var out []soakIsolatedResult
	for i, e := range schedule {
		var before map[faults.Kind]int
		if p := proxies[e.Target]; p != nil {
			before, _ = p.Counts()
		}
		from := time.Now()
		apply(e, false)
		time.Sleep(e.Dur) // the episode's length, not a wait for a condition
		apply(e, true)
		to := time.Now()
		r := soakIsolatedResult{happened: soakHappened{e, from, to}}
		if p := proxies[e.Target]; p != nil {
			after, _ := p.Counts()
			r.hit = after[e.Kind] - before[e.Kind]
		}
		ref := to
		if e.Target == soakWorker {
			ref = from
		}
		// Bounded: three times the largest budget; past it the shard counts as never recovered.
		deadline := ref.Add(3 * (soakFailover + 5*time.Second))
		for time.Now().Before(deadline) {
			fleet.sample(client)
			if rd, ok := fleet.recovery(ref, shards); ok {
				r.recovery, r.recovered = rd, true
				break
			}
			time.Sleep(250 * time.Millisecond) // poll interval of the bounded wait above
		}
		r.moved = soakProcessorStarts(fleet.logDir, from, ref.Add(r.recovery))
		t.Logf("soak: episode %d/%d %s: recovered %v in %s (lease moved: %v)", i+1, len(schedule), e, r.recovered, r.recovery.Round(100*time.Millisecond), r.moved)
		out = append(out, r)
		// A quiet second between episodes, so that the next fault meets a settled fleet.
		time.Sleep(time.Second)
	}
	return out
}

// soakProcessorStarts reports whether any worker started a shard processor (took a lease)
// between from and to.
func soakProcessorStarts(dir string, from, to time.Time) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "worker-*.log"))
	for _, f := range files {
		for _, ts := range soakLogTimes(f, "shard processor started") {
			if !ts.Before(from) && !ts.After(to) {
				return true
			}
		}
	}
	return false
}

// soakHappened is an episode as it ran: its wall-clock start and end.
type soakHappened struct {
	ep       soakEpisode
	from, to time.Time
}

// soakLeaseEvents lists the workers' lease losses, give-ups and dropped buffers with the
// episodes that ran in the failover time before each (the evidence for "a lease was given up
// or lost because of which fault").
func soakLeaseEvents(dir string, t0 time.Time, eps []soakHappened) string {
	msgs := map[string]bool{"lease lost": true, "lease renewal failed, giving the lease up": true,
		"dropped shard buffer for replay": true, "shutdown timed out, shard will be replayed": true}
	var lines []string
	files, _ := filepath.Glob(filepath.Join(dir, "worker-*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			var l struct {
				TS     time.Time `json:"ts"`
				Msg    string    `json:"msg"`
				Shard  string    `json:"shard_id"`
				Reason string    `json:"reason"`
			}
			if json.Unmarshal([]byte(line), &l) != nil || !msgs[l.Msg] {
				continue
			}
			var active []string
			for _, h := range eps {
				if h.from.Before(l.TS) && h.to.After(l.TS.Add(-10*time.Second)) {
					active = append(active, h.ep.Target+"/"+string(h.ep.Kind))
				}
			}
			lines = append(lines, fmt.Sprintf("%7.1fs %-16s %-22s %s %s; faults in the 10 s before: %v",
				l.TS.Sub(t0).Seconds(), strings.TrimSuffix(filepath.Base(f), ".log"), l.Shard, l.Msg, l.Reason, active))
		}
	}
	sort.Strings(lines)
	return "lease events:\n" + strings.Join(lines, "\n") + "\n"
}

// soakLogTimes returns the times of every line of the log at path whose message starts with msg
// (by prefix: the library's messages carry their error).
func soakLogTimes(path, msg string) []time.Time {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []time.Time
	for _, line := range strings.Split(string(b), "\n") {
		var l struct {
			TS  time.Time `json:"ts"`
			Msg string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(l.Msg, msg) {
			out = append(out, l.TS)
		}
	}
	return out
}

// soakLogAfter reports whether the log at path has a line starting with msg at or after t.
func soakLogAfter(path, msg string, t time.Time) bool {
	for _, ts := range soakLogTimes(path, msg) {
		if !ts.Before(t) {
			return true
		}
	}
	return false
}

func soakKills(eps []soakEpisode) int {
	n := 0
	for _, e := range eps {
		if e.Target == soakWorker {
			n++
		}
	}
	return n
}

// soakCatalog is a few of classicmodels' real customers (the model knows them) and products.
func soakCatalog() produce.Catalog {
	return produce.Catalog{
		Customers: []produce.Customer{{Number: 103, City: "Nantes", Country: "France", CreditLimit: 21000}, {Number: 112, City: "Las Vegas", Country: "USA", CreditLimit: 71800}, {Number: 141, City: "Madrid", Country: "Spain", CreditLimit: 227600}, {Number: 124, City: "San Rafael", Country: "USA", CreditLimit: 210500}},
		Products:  []string{"S10_1678", "S10_1949", "S12_1099", "S18_1589", "S24_2000", "S50_1514", "S700_2834"},
	}
}

// sameLeases keeps the samples (values with their leases-held counts) of the leases count
// most common in the last window that the middle window also has.
func sameLeases(mid, midLeases, last, lastLeases []float64) ([]float64, []float64, bool) {
	inMid := map[float64]bool{}
	for _, l := range midLeases {
		inMid[l] = true
	}
	freq := map[float64]int{}
	for _, l := range lastLeases {
		if inMid[l] {
			freq[l]++
		}
	}
	best, n := 0.0, 0
	for l, c := range freq {
		if c > n || c == n && l < best {
			best, n = l, c
		}
	}
	if n == 0 {
		return nil, nil, false
	}
	pick := func(xs, ls []float64) []float64 {
		var out []float64
		for i, x := range xs {
			if ls[i] == best {
				out = append(out, x)
			}
		}
		return out
	}
	return pick(mid, midLeases), pick(last, lastLeases), true
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// soakLogSummary counts the workers' warn and error log lines by message, most frequent first.
func soakLogSummary(dir string) string {
	counts := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(dir, "worker-*.log"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				Level string `json:"level"`
				Msg   string `json:"msg"`
				Op    string `json:"op"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil || (l.Level != "warn" && l.Level != "error" && l.Level != "fatal") {
				continue
			}
			// The library's messages carry the error text: keep their head only.
			if i := strings.Index(l.Msg, ": operation error"); i > 0 {
				l.Msg = l.Msg[:i]
			}
			if len(l.Msg) > 90 {
				l.Msg = l.Msg[:90] + "…"
			}
			k := l.Level + "\t" + l.Msg
			if l.Op != "" {
				k += " (op=" + l.Op + ")"
			}
			counts[k]++
		}
		fh.Close()
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return counts[keys[i]] > counts[keys[j]] || counts[keys[i]] == counts[keys[j]] && keys[i] < keys[j]
	})
	var b strings.Builder
	b.WriteString("warn/error log lines of all workers:\n")
	for _, k := range keys[:min(len(keys), 30)] {
		fmt.Fprintf(&b, "%7d  %s\n", counts[k], k)
	}
	return b.String()
}

func TestSoakSameLeases(t *testing.T) {
	for _, c := range []struct {
		name                             string
		mid, midLeases, last, lastLeases []float64
		wantMid, wantLast                []float64
		wantOK                           bool
	}{
		{"same count", []float64{20, 21}, []float64{1, 1}, []float64{22, 23}, []float64{1, 1}, []float64{20, 21}, []float64{22, 23}, true},
		{"lease taken in the last fifth", []float64{20, 26, 21}, []float64{1, 2, 1}, []float64{27, 21, 26}, []float64{2, 1, 2}, []float64{26}, []float64{27, 26}, true},
		{"no common count", []float64{20}, []float64{0}, []float64{27}, []float64{1}, nil, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, l, ok := sameLeases(c.mid, c.midLeases, c.last, c.lastLeases)
			if ok != c.wantOK || fmt.Sprint(m) != fmt.Sprint(c.wantMid) || fmt.Sprint(l) != fmt.Sprint(c.wantLast) {
				t.Fatalf("got %v %v %v, want %v %v %v", m, l, ok, c.wantMid, c.wantLast, c.wantOK)
			}
		})
	}
}
