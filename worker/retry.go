package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
)

// errLeaseExpiring means the lease has too little time left to start a write.
var errLeaseExpiring = errors.New("lease has less than lease_safety_margin left")

// errRecommendTimeout: a Recommender call ran past worker.recommend_timeout (transient; a
// call for several events is split rather than retried whole).
var errRecommendTimeout = errors.New("recommend call ran past recommend_timeout")

// errGaveUp is what retry returns when the processor stopped or died on the way: the caller
// returns at once and takes nothing more.
var errGaveUp = errors.New("record processor gave up")

// retry runs fn with capped exponential backoff and jitter until it succeeds, and returns nil.
// It returns an ErrDeterministic error of a recommend as it is (retrying the same input cannot
// help; the caller isolates the records). It returns errGaveUp, and the processor dies, when
// the lease is lost or the worker's drain context ends; a recommend, which writes nothing,
// also gives up when shutdown is requested. Fenced ops (writes) start only while the lease
// has more than lease_safety_margin left and run with a context that ends when the lease,
// as renewed meanwhile, has less than that left, so a write is abandoned before another
// worker can take the lease. key names the object of a put (for logs).
func (p *processor) retry(o op, key string, fn func(context.Context) error) error {
	return p.retryOr(o, key, nil, fn)
}

// retryOr is retry, except that it returns at once an error for which handBack (when not nil)
// reports true: the caller has a better answer to it than trying the same call again.
func (p *processor) retryOr(o op, key string, handBack func(error) bool, fn func(context.Context) error) error {
	cfg := p.s.cfg
	backoff := cfg.Retry.InitialBackoff
	for attempt := 1; ; attempt++ {
		err := p.attempt(o, fn)
		if err == nil {
			if o == opPut {
				p.s.storageOK()
			}
			return nil
		}
		if o == opRecommend && errors.Is(err, ErrDeterministic) {
			return err
		}
		if handBack != nil && handBack(err) {
			return err
		}
		if errors.Is(err, errLeaseLost) || (o == opCheckpoint && p.s.deps.IsLeaseLost != nil && p.s.deps.IsLeaseLost(err)) {
			p.die("lease lost", err)
			return errGaveUp
		}
		if p.s.ctx.Err() != nil {
			p.writeAbandoned = o.fenced()
			p.die("shutdown deadline", err)
			return errGaveUp
		}
		if o == opRecommend && p.s.stopping.Load() {
			// Nothing of this chunk is buffered yet, and a stopped processor flushes nothing
			// (not even earlier chunks of the batch): leave it for the next owner.
			p.state = stateStopped
			p.log.Info("shutdown during retry, batch left for replay", zap.Stringer("op", o))
			return errGaveUp
		}
		if !errors.Is(err, errLeaseExpiring) {
			p.s.deps.Metrics.Retries.WithLabelValues(p.shard, o.String()).Inc()
			fields := []zap.Field{zap.Stringer("op", o), zap.Int("attempt", attempt), zap.Duration("backoff", backoff), zap.Error(err)}
			if key != "" {
				fields = append(fields, zap.String("s3_key", key))
			}
			if code, ok := permanentStorageCode(err); ok && o == opPut {
				// No retry fixes this until an operator does: say so loudly, keep the batch.
				p.s.storageFailed(code, key)
				p.log.Error("object storage refuses writes; fix the bucket or the task role, retrying",
					append(fields, zap.String("bucket", p.s.bucket()), zap.String("action", "s3:PutObject"), zap.String("code", code))...)
			} else {
				p.log.Warn("retrying", fields...)
			}
		}
		if !p.pause(&backoff) {
			if p.s.ctx.Err() != nil {
				p.writeAbandoned = o.fenced()
				p.die("shutdown deadline", err)
			}
			return errGaveUp
		}
	}
}

// pause sleeps for a jittered *backoff (full jitter in [backoff/2, backoff)), then doubles it up
// to retry.max_backoff. It returns false, early, when the drain context ends.
func (p *processor) pause(backoff *time.Duration) bool {
	b := *backoff
	sleep := b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
	t := time.NewTimer(sleep)
	defer t.Stop()
	select {
	case <-p.s.ctx.Done():
		return false
	case <-t.C:
	}
	*backoff = min(b*2, p.s.cfg.Retry.MaxBackoff)
	return true
}

var errLeaseLost = errors.New("lease lost")

func (p *processor) attempt(o op, fn func(context.Context) error) error {
	// Even an op that writes nothing stops when the lease is gone: the library ends the shard
	// consumer only after ProcessRecords returns.
	until, ok := p.s.lease.HeldUntil(p.shard)
	left := time.Until(until)
	if !ok || left <= 0 {
		return errLeaseLost
	}
	if !o.fenced() {
		ctx, cancel := context.WithTimeoutCause(p.s.ctx, p.s.cfg.RecommendTimeout, errRecommendTimeout)
		defer cancel()
		err := fn(ctx)
		if err != nil && errors.Is(context.Cause(ctx), errRecommendTimeout) {
			// Whatever the call says once its deadline has passed (a cancelled query, a
			// closed connection) is the timeout's doing, never a verdict on the input: %v
			// keeps an ErrDeterministic it may carry from sending a slow record to errors/.
			return fmt.Errorf("%w (%s): %v", errRecommendTimeout, p.s.cfg.RecommendTimeout, err)
		}
		return err
	}
	if left <= p.s.cfg.LeaseSafetyMargin {
		return errLeaseExpiring
	}
	ctx, cancel := p.leaseContext()
	defer cancel()
	err := fn(ctx)
	if err != nil && errors.Is(context.Cause(ctx), errLeaseExpiring) {
		return errLeaseExpiring
	}
	return err
}

// leaseContext is the context of one fenced write: it ends when the lease, as renewed while
// the write runs, has less than lease_safety_margin left (or when the drain context ends).
// A deadline fixed when the attempt starts would cut a slow upload short although renewals
// keep the lease safe.
func (p *processor) leaseContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(p.s.ctx)
	margin := p.s.cfg.LeaseSafetyMargin
	left := func() time.Duration {
		until, ok := p.s.lease.HeldUntil(p.shard)
		if !ok {
			return 0
		}
		return time.Until(until) - margin
	}
	t := time.NewTimer(max(left(), 0))
	go func() {
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			d := left()
			if d <= 0 {
				cancel(errLeaseExpiring)
				return
			}
			t.Reset(d)
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}
