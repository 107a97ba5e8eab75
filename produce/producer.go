package produce

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"go.uber.org/zap"
)

// PutRecordsAPI is the part of the Kinesis client the producer uses; *kinesis.Client has it.
type PutRecordsAPI interface {
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

// Kinesis limits a PutRecords call to 500 records and 5 MiB.
const (
	maxBatchRecords = 500
	maxBatchBytes   = 5 << 20
	maxAttempts     = 10
)

// Config controls one producer run. A run ends at Count events, after Duration, or when ctx
// is done, whichever comes first (zero Count / Duration: no limit).
type Config struct {
	Stream   string
	Rate     float64 // events per second
	Count    int
	Duration time.Duration
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Stream == "" {
		return errors.New("stream: must not be empty")
	}
	if !(c.Rate > 0) {
		return fmt.Errorf("rate: must be > 0 events/s, got %g", c.Rate)
	}
	if c.Count < 0 {
		return fmt.Errorf("count: must be >= 0, got %d", c.Count)
	}
	if c.Duration < 0 {
		return fmt.Errorf("duration: must be >= 0, got %s", c.Duration)
	}
	if c.Count == 0 && c.Duration == 0 {
		return errors.New("count: give --count or --duration (or both)")
	}
	return nil
}

// Stats reports what a run sent.
type Stats struct {
	Sent      int             `json:"sent"`      // records accepted by Kinesis
	Bad       map[BadKind]int `json:"bad"`       // malformed records among Sent, by kind
	Throttled int             `json:"throttled"` // records retried after a throughput error
	PerShard  map[string]int  `json:"per_shard"` // accepted records per shard id
	Elapsed   time.Duration   `json:"elapsed_ns"`
	// Sample holds the first few well-formed events' session ids, for demo summaries.
	Sample []string `json:"sample_sessions"`
}

// Producer paces generated events onto a stream.
type Producer struct {
	cfg    Config
	gen    *Generator
	client PutRecordsAPI
	log    *zap.Logger
	now    func() time.Time
}

// New validates; it does no I/O.
func New(cfg Config, gen *Generator, client PutRecordsAPI, log *zap.Logger) (*Producer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if gen == nil || client == nil || log == nil {
		return nil, errors.New("producer: generator, client and logger are required")
	}
	return &Producer{cfg: cfg, gen: gen, client: client, log: log, now: time.Now}, nil
}

// Run sends events until the configured limit or ctx is done. Events are paced so that after t
// seconds about t×rate have been sent, in PutRecords batches of what is due. It returns the
// stats so far and an error only for a failure other than ctx ending.
func (p *Producer) Run(ctx context.Context) (st Stats, err error) {
	st = Stats{Bad: map[BadKind]int{}, PerShard: map[string]int{}}
	start := p.now()
	defer func() { st.Elapsed = p.now().Sub(start) }()
	for {
		if p.cfg.Count > 0 && st.Sent >= p.cfg.Count {
			return st, nil
		}
		elapsed := p.now().Sub(start)
		if p.cfg.Duration > 0 && elapsed >= p.cfg.Duration {
			return st, nil
		}
		due := int(elapsed.Seconds()*p.cfg.Rate) + 1 - st.Sent
		if due <= 0 {
			// Sleep until the next event is due.
			next := time.Duration(float64(st.Sent) / p.cfg.Rate * float64(time.Second))
			if err := sleep(ctx, next-elapsed); err != nil {
				return st, nil
			}
			continue
		}
		if p.cfg.Count > 0 {
			due = min(due, p.cfg.Count-st.Sent)
		}
		if err := p.sendBatch(ctx, min(due, maxBatchRecords), &st); err != nil {
			if ctx.Err() != nil {
				return st, nil
			}
			return st, err
		}
	}
}

func (p *Producer) sendBatch(ctx context.Context, n int, st *Stats) error {
	events := make([]Event, 0, n)
	size := 0
	for len(events) < n {
		ev := p.gen.Next()
		if size+len(ev.Data)+len(ev.PartitionKey) > maxBatchBytes {
			break
		}
		size += len(ev.Data) + len(ev.PartitionKey)
		events = append(events, ev)
	}
	pending := events
	for attempt := 1; len(pending) > 0; attempt++ {
		entries := make([]types.PutRecordsRequestEntry, len(pending))
		for i, ev := range pending {
			entries[i] = types.PutRecordsRequestEntry{Data: ev.Data, PartitionKey: aws.String(ev.PartitionKey)}
		}
		out, err := p.client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(p.cfg.Stream), Records: entries})
		if err != nil {
			var thr *types.ProvisionedThroughputExceededException
			if errors.As(err, &thr) && attempt < maxAttempts {
				st.Throttled += len(pending)
				if err := sleep(ctx, backoff(attempt)); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("put records to %s: %w", p.cfg.Stream, err)
		}
		var retry []Event
		for i, r := range out.Records {
			if r.ErrorCode != nil {
				retry = append(retry, pending[i])
				continue
			}
			ev := pending[i]
			st.Sent++
			st.PerShard[aws.ToString(r.ShardId)]++
			if ev.Bad != "" {
				st.Bad[ev.Bad]++
			} else if len(st.Sample) < 10 {
				st.Sample = append(st.Sample, ev.PartitionKey)
			}
		}
		if len(retry) > 0 {
			// Per-shard limits (1,000 records or 1 MiB per second): back off and resend only
			// the refused records, in their original order.
			if attempt >= maxAttempts {
				return fmt.Errorf("put records to %s: %d records still refused after %d attempts", p.cfg.Stream, len(retry), attempt)
			}
			st.Throttled += len(retry)
			p.log.Warn("records throttled, retrying", zap.Int("records", len(retry)), zap.Int("attempt", attempt))
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return err
			}
		}
		pending = retry
	}
	return nil
}

// backoff is capped exponential backoff with full jitter.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 6)
	return time.Duration(rand.Int64N(int64(min(d, 5*time.Second))) + int64(50*time.Millisecond))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
