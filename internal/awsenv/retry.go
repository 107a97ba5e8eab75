package awsenv

import (
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// ThrottleBaseDelay bounds the first retry's pause after a throttling answer
// (ProvisionedThroughputExceededException, SlowDown, ...) of the Kinesis and S3 clients; each
// further retry doubles the bound, with full jitter. The SDK's standard retryer uses 1 s here:
// a GetRecords throttled once stalled its shard 0.5 s on average, and one throttled PutObject
// stalled its shard's flush as long, so that 5 % of each throttled cost a 4-shard drain a fifth
// of its rate. A Kinesis shard serves 5 reads per second, so a throttled read frees up within
// a slot or two; S3 asks for backoff on SlowDown, and doubling still gives it. When the SDK's
// attempts run out, the callers back off longer on their own (the KCL library waits a second
// on a throttled GetRecords; the record processor retries a Put from retry.initial_backoff).
const ThrottleBaseDelay = 100 * time.Millisecond

// transientBaseDelay is the SDK's own first-retry bound for the other retryable errors (5xx,
// connection errors): unchanged.
const transientBaseDelay = 50 * time.Millisecond

// backoff is the SDK's exponential full-jitter backoff, t = rand[0,1) * min(base * 2^i,
// retry.DefaultMaxBackoff) for the i-th retry (from 0), with base ThrottleBaseDelay for
// throttling errors instead of 1 s.
type backoff struct {
	throttle retry.IsErrorThrottle
	rand     func() float64
}

func (b backoff) BackoffDelay(attempt int, err error) (time.Duration, error) {
	base := transientBaseDelay
	if b.throttle.IsErrorThrottle(err) == aws.TrueTernary {
		base = ThrottleBaseDelay
	}
	bound := retry.DefaultMaxBackoff
	// attempt is the 1-based number of the attempt that failed: the first retry doubles 0 times.
	if i := attempt - 1; i < 0 {
		bound = base
	} else if i < 30 && base<<i < bound {
		bound = base << i
	}
	return time.Duration(b.rand() * float64(bound)), nil
}

// newRetryer is the SDK's standard retryer (attempts, retry quota, retryable errors) with
// backoff's delays.
func newRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.Backoff = backoff{throttle: retry.IsErrorThrottles(o.Throttles), rand: rand.Float64}
	})
}

// throttleRetry installs newRetryer unless the environment or shared config chose a retryer or
// the adaptive mode (AWS_RETRY_MODE). AWS_MAX_ATTEMPTS still applies. Caller options come
// after it and may replace it.
func throttleRetry(cfg *aws.Config) {
	if cfg.Retryer == nil && (cfg.RetryMode == "" || cfg.RetryMode == aws.RetryModeStandard) {
		cfg.Retryer = newRetryer
	}
}
