package worker

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// enrichment is the Recommender's answer for one event, or why it has none.
type enrichment struct {
	items   []ScoredItem
	similar []SimilarItem
	version string
	err     error // deterministic failure of this record: it goes to errors/
}

// enrich asks the Recommender for the events at idx and fills out[idx], at most
// worker.recommend_batch events per call. A call that fails deterministically, or that runs
// past worker.recommend_timeout, for more than one event is split in halves and each half is
// asked again: a deterministic failure is so narrowed down to the records that fail alone
// (each confirmed with a neutral probe before it is sent to errors/, see probe and
// failure.go), and a call too slow for the timeout becomes calls small enough to finish. A
// single event that times out is an outage, never a bad record: it is retried with backoff.
// It returns false when the processor stopped or died on the way (nothing of the page is then
// kept).
func (p *processor) enrich(events []Event, idx []int, out []enrichment) bool {
	if n := p.s.cfg.RecommendBatch; len(idx) > n {
		// A call's latency grows with its users (one HNSW scan each): a whole 10,000-record
		// page in one call can outlast recommend_timeout on a large catalog and would then
		// be retried whole, forever.
		for lo := 0; lo < len(idx); lo += n {
			if !p.enrich(events, idx[lo:min(lo+n, len(idx))], out) {
				return false
			}
		}
		return true
	}
	backoff := p.s.cfg.Retry.InitialBackoff
	for {
		err := p.recommend(events, idx, out)
		switch {
		case err == nil:
			return true
		case errors.Is(err, errGaveUp):
			return false
		case len(idx) > 1:
			if errors.Is(err, errRecommendTimeout) {
				p.s.deps.Metrics.Retries.WithLabelValues(p.shard, opRecommend.String()).Inc()
				p.log.Warn("recommend call timed out, splitting it", zap.Int("records", len(idx)),
					zap.String("seq_first", p.seqOf(idx[0])), zap.String("seq_last", p.seqOf(idx[len(idx)-1])), zap.Error(err))
			}
			mid := len(idx) / 2
			return p.enrich(events, idx[:mid], out) && p.enrich(events, idx[mid:], out)
		}
		// One record fails deterministically. Is it the record, or does the recommender now
		// reject any input (a bad artifact, a schema change, a broken similar-items lookup)?
		perr := p.probe(&events[idx[0]])
		switch {
		case perr == nil:
			out[idx[0]].err = err
			p.log.Warn("record cannot be enriched, sent to errors/", zap.String("sequence_number", p.seqOf(idx[0])),
				zap.String("reason", string(ReasonRecommendFailed)), zap.Error(err))
			return true
		case errors.Is(perr, errGaveUp):
			return false
		}
		// The recommender rejects a neutral probe as well: no record is at fault. Wait as for
		// an outage; the shard shows as stalled if this lasts.
		if p.s.stopping.Load() {
			// Nothing of this page is buffered yet: leave it for the next owner. Waiting on
			// until the drain is abandoned would leave an active processor that took nothing,
			// and a closed shard could then be ended past this page.
			p.state = stateStopped
			p.log.Info("shutdown while the recommender rejects every input, batch left for replay",
				zap.String("sequence_number", p.seqOf(idx[0])), zap.String("checkpoint", p.checkpoint))
			return false
		}
		p.s.deps.Metrics.Retries.WithLabelValues(p.shard, opRecommend.String()).Inc()
		p.log.Error("recommender rejects every input, retrying", zap.String("sequence_number", p.seqOf(idx[0])),
			zap.Duration("backoff", backoff), zap.NamedError("probe_error", perr), zap.Error(err))
		if !p.pause(&backoff) {
			// The drain context ended (shutdown_timeout): never write or checkpoint again.
			p.die("shutdown deadline", err)
			return false
		}
	}
}

// probe tells a record that cannot be enriched from a recommender that cannot enrich anything:
// it asks a neutral question exercising every lookup the record's failing call made, and
// returns nil when the recommender answers it (the record is then at fault), an
// ErrDeterministic error when it rejects it too, or errGaveUp.
//
// Neutral means nothing of the record: the user is the empty feature set (every feature
// unknown), and, when the record has an anchor (so its call also looked up similar items), the
// anchor is a product the recommender itself named: the top item recommended to that neutral
// user, which the catalog therefore holds, other than the record's own anchor. Probing with
// the record's own anchor could not tell a bad anchor from a similar-items lookup that fails
// for every product (both fail), and probing without an anchor would not exercise that lookup
// at all: every record with a history would be blamed for an outage of it. The neutral user is
// asked for k+1 items so that one of them always differs from the record's anchor. A catalog
// that recommends nothing to the neutral user cannot be probed: that is treated as an outage,
// not as the record's fault.
func (p *processor) probe(ev *Event) error {
	k := p.s.deps.K
	var neutral Recommendations
	err := p.retry(opRecommend, "", func(ctx context.Context) error {
		var err error
		neutral, err = p.s.deps.Recommender.Recommend(ctx, []UserFeatures{{}}, nil, k+1)
		return err
	})
	own := ev.Anchor()
	if err != nil || own == "" {
		return err
	}
	var anchor string
	if len(neutral.ForUser) == 1 {
		for _, it := range neutral.ForUser[0] {
			if it.ID != "" && it.ID != own {
				anchor = it.ID
				break
			}
		}
	}
	if anchor == "" {
		return fmt.Errorf("%w: no product to probe the similar-items lookup with: the recommender named none for a neutral user", ErrDeterministic)
	}
	return p.retry(opRecommend, "", func(ctx context.Context) error {
		_, err := p.s.deps.Recommender.Recommend(ctx, []UserFeatures{{}}, []string{anchor}, k)
		if err != nil {
			return fmt.Errorf("probe similar items of %q: %w", anchor, err)
		}
		return nil
	})
}

// seqOf is the sequence number (and sub-sequence) of user record i of the batch being taken
// (for logs).
func (p *processor) seqOf(i int) string {
	if i >= len(p.batch) {
		return ""
	}
	if u := p.batch[i]; u.sub != 0 {
		return fmt.Sprintf("%s/%d", u.seq, u.sub)
	}
	return p.batch[i].seq
}

// recommend makes one Recommender call (retried while it fails transiently) for the events at
// idx and fills out[idx]. It returns nil, an ErrDeterministic error, errRecommendTimeout (a
// call for more than one event that ran past recommend_timeout: the caller splits it), or
// errGaveUp.
func (p *processor) recommend(events []Event, idx []int, out []enrichment) error {
	users := make([]UserFeatures, len(idx))
	var anchors []string
	seen := map[string]bool{}
	for j, i := range idx {
		ev := &events[i]
		users[j] = UserFeatures{City: ev.City, Country: ev.Country, CreditLimit: ev.CreditLimit}
		if a := ev.Anchor(); a != "" && !seen[a] {
			seen[a] = true
			anchors = append(anchors, a)
		}
	}
	// A timed-out call for several events goes back to enrich, which splits it; retrying the
	// same call would time out again. A single event that times out is an outage: retried.
	var handBack func(error) bool
	if len(idx) > 1 {
		handBack = func(err error) bool { return errors.Is(err, errRecommendTimeout) }
	}
	var recs Recommendations
	err := p.retryOr(opRecommend, "", handBack, func(ctx context.Context) error {
		var err error
		recs, err = p.s.deps.Recommender.Recommend(ctx, users, anchors, p.s.deps.K)
		if err == nil && len(recs.ForUser) != len(users) {
			err = fmt.Errorf("recommender answered %d users, asked %d", len(recs.ForUser), len(users))
		}
		return err
	})
	if err != nil {
		return err
	}
	for j, i := range idx {
		out[i] = enrichment{items: recs.ForUser[j], similar: recs.Similar[events[i].Anchor()], version: recs.Version}
	}
	return nil
}
