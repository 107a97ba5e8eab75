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
	for _, r := range []string{"claim", "released", "expired"} {
		m.Handovers.WithLabelValues(r) // export zeros, so rate() works from the start
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

// acquired counts an acquisition whose row was in state previous (see acquireFrom).
func (m *Metrics) acquired(previous string) {
	if previous != "new" {
		m.Handovers.WithLabelValues(previous).Inc()
	}
}
