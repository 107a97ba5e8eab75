package checkpoint

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the lease store's Prometheus series. A Store whose Config.Metrics is nil keeps
// unregistered ones.
type Metrics struct {
	// Handovers counts the leases this worker took over from another worker (or from an
	// earlier process under the same worker id), by how the previous holder let go:
	// "claim" (it handed the lease over to this worker's claim: rebalancing), "released"
	// (it released the lease: SIGTERM drain or a consumer that ended), "expired" (its
	// counter did not move for worker.failover_time: it died, stalled or abandoned a write).
	// Leases of shards nobody held before are not hand-overs.
	Handovers *prometheus.CounterVec
	// Claims counts the claims this worker wrote on other workers' leases (lease stealing).
	Claims prometheus.Counter
}

// NewMetrics creates the series and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Handovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_worker_lease_handovers_total",
			Help: "Leases this worker took over from another worker, by how the previous holder let go (claim, released, expired)."},
			[]string{"reason"}),
		Claims: prometheus.NewCounter(prometheus.CounterOpts{Name: "recstream_worker_lease_claims_total",
			Help: "Claims this worker wrote on other workers' leases to rebalance (lease stealing)."}),
	}
	for _, h := range []handover{handoverClaim, handoverReleased, handoverExpired} {
		m.Handovers.WithLabelValues(h.String()) // export zeros, so rate() works from the start
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.Handovers, m.Claims} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register lease metrics: %w", err)
		}
	}
	return m, nil
}

// handover is how the previous holder of a lease this store acquires let go of it: the reason
// label of recstream_worker_lease_handovers_total.
type handover uint8

const (
	handoverNone     handover = iota // nobody held the lease before: not a hand-over
	handoverClaim                    // the holder released it to this worker's claim
	handoverReleased                 // the holder released it
	handoverExpired                  // the holder's counter did not move for FailoverTime
)

// String returns the label value ("claim", "released", "expired"; "new" for handoverNone).
func (h handover) String() string {
	return [...]string{handoverNone: "new", handoverClaim: "claim", handoverReleased: "released", handoverExpired: "expired"}[h]
}

// priorHolder classifies an acquisition of the row cur (exists: the row exists) by worker me.
func priorHolder(cur Lease, exists bool, me string) handover {
	switch {
	case exists && cur.Owner == "" && cur.ClaimRequest == me:
		return handoverClaim
	case exists && cur.Owner == "" && cur.Counter > 0:
		return handoverReleased
	case exists && cur.Owner != "":
		return handoverExpired
	}
	return handoverNone
}

// acquired counts an acquisition whose previous holder let go as h (see acquireFrom).
func (m *Metrics) acquired(h handover) {
	if h != handoverNone {
		m.Handovers.WithLabelValues(h.String()).Inc()
	}
}
