package inference

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

// Index is what Service needs from the vector store; *VectorIndex satisfies it.
type Index interface {
	ItemsFromUsers(ctx context.Context, embs [][]float32, k int) ([][]ScoredItem, error)
	ItemsFromItems(ctx context.Context, codes []string, k int) (map[string][]SimilarItem, error)
	LiveVersion(ctx context.Context) (string, error)
}

// Result answers one Recommend batch.
type Result struct {
	// ModelVersion is the artifacts version that produced every answer in the batch; it is
	// also the embeddings version the queries read.
	ModelVersion string
	// Recommended[i] are the k best items for users[i], best first. Users with equal features
	// share one slice: treat it as read-only.
	Recommended [][]ScoredItem
	// Similar[j] are the k items nearest to items[j], nearest first; nil when items[j] is ""
	// or has no embedding (not an error: a product unknown to the model has no neighbours).
	Similar [][]SimilarItem
}

// maxSwitchAttempts bounds how often one Recommend batch is redone because the live
// embeddings version changed under it.
const maxSwitchAttempts = 3

// maxSimilarCache bounds the per-version items-from-item cache (entries, not bytes).
const maxSimilarCache = 100_000

// served is one model version together with its items-from-item cache.
type served struct {
	model *Model
	mu    sync.Mutex
	cache map[similarKey][]SimilarItem // nil value: unknown item
}

type similarKey struct {
	code string
	k    int
}

// Service serves recommendations from the model whose version is the live embeddings version
// in PostgreSQL, and follows new versions without a restart (hot reload).
//
// Consistency: a Recommend batch computes user embeddings with model M, queries the index,
// then reads the live embeddings version; if it is not M's version (a new version was swapped
// in meanwhile) the batch is redone once with the live version's model. So every Result pairs
// a model with the item embeddings of the same version, and a swap never fails a request.
// Run preloads the version latest.json names, so the switch usually costs no artifact reads.
//
// A live version without a loadable model (embeddings loaded with `batch embeddings
// --without-model`, or artifacts missing or corrupt) cannot be served: the service keeps its
// current model loaded, Recommend fails with ErrModelUnavailable rather than answer from a
// mismatched pair, Health names both versions and the reason, the observer set with
// SetMismatchObserver is told, and one line is logged at error level. Run keeps checking, so
// the state shows without traffic and clears by itself once the model can be loaded (or
// another version with a model goes live).
//
// Recommend, Version, Health and SetMismatchObserver are safe for concurrent use; Run runs on
// its own goroutine.
type Service struct {
	cfg   Config
	store objstore.Store
	index Index
	log   *zap.Logger

	cur atomic.Pointer[served]

	loadMu sync.Mutex            // serialises artifact loads
	loaded map[string]*Model     // preloaded models by version (current and next)
	failed map[string]failedLoad // the last failed load of a version, until retryLoadAfter
	now    func() time.Time      // tests may replace it

	stateMu     sync.Mutex
	unavailable *unavailable // non-nil while the live version cannot be served

	obsMu    sync.Mutex // held while the observer runs: calls never overlap or reorder
	observer func(mismatch bool)
}

// unavailable is a live embeddings version the service cannot serve, and why.
type unavailable struct {
	live string
	err  error
}

type failedLoad struct {
	err error
	at  time.Time
}

// retryLoadAfter is how long Recommend reuses a version's failed load instead of reading the
// artifacts again (Run's checks always retry): a live version without a model costs one
// artifacts read per interval, not one per batch.
const retryLoadAfter = 10 * time.Second

// ErrModelUnavailable is returned (wrapped) by Recommend, Load and Health when the live
// embeddings version has no loadable model (missing or corrupt artifacts, or not the pinned
// version). Nothing is answered: answering with another version's model would pair user and
// item embeddings of two models. The state clears without a restart once the model loads.
var ErrModelUnavailable = errors.New("model unavailable")

// NewService validates its arguments; it does no I/O. Call Load (or Run) before Recommend.
// cfg.ArtifactsVersion "latest" follows new versions; any other name pins that version.
func NewService(cfg Config, store objstore.Store, index Index, log *zap.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("inference service: %w", err)
	}
	if store == nil || index == nil || log == nil {
		return nil, errors.New("inference service: nil artifacts store, index or logger")
	}
	return &Service{cfg: cfg, store: store, index: index, log: log.With(zap.String("component", "inference")),
		loaded: map[string]*Model{}, failed: map[string]failedLoad{}, now: time.Now}, nil
}

// ErrNotLoaded is returned by Recommend before the first successful Load.
var ErrNotLoaded = errors.New("inference service: no model loaded")

// Version returns the artifacts version being served, "" before the first Load.
func (s *Service) Version() string {
	if c := s.cur.Load(); c != nil {
		return c.model.Version
	}
	return ""
}

// SetMismatchObserver sets fn to be called with true when the live embeddings version becomes
// one the service cannot serve (and again if another such version goes live), and with false
// when it can serve the live version again; it is called once at once with the current state.
// Calls do not overlap and arrive in order. fn must not call SetMismatchObserver. It lets a
// caller keep a gauge (1 while mismatched) without this package knowing the metrics library.
func (s *Service) SetMismatchObserver(fn func(mismatch bool)) {
	s.stateMu.Lock()
	s.obsMu.Lock()
	s.observer = fn
	mismatch := s.unavailable != nil
	s.stateMu.Unlock()
	defer s.obsMu.Unlock()
	if fn != nil {
		fn(mismatch)
	}
}

// Health returns nil when the service serves the model of the live embeddings version it last
// saw (in Load, Recommend or Run's check). Otherwise the error says why: no model loaded yet, or
// (wrapping ErrModelUnavailable) the model served, the live version, and why the live
// version's model cannot be loaded. Meant for a readiness check; it does no I/O.
func (s *Service) Health() error {
	s.stateMu.Lock()
	u := s.unavailable
	s.stateMu.Unlock()
	served := s.Version()
	if u != nil {
		if served == "" {
			served = "none"
		}
		return fmt.Errorf("%w: serving model %s, live embeddings version %s: %v", ErrModelUnavailable, served, u.live, u.err)
	}
	if served == "" {
		return ErrNotLoaded
	}
	return nil
}

// Model returns the model being served (nil before the first Load).
func (s *Service) Model() *Model {
	if c := s.cur.Load(); c != nil {
		return c.model
	}
	return nil
}

// Load makes the service serve the live embeddings version's model, loading its artifacts if
// needed. With a pinned artifacts_version the live version must be that version. When the live
// version's model cannot be loaded the error wraps ErrModelUnavailable and Health reports it.
func (s *Service) Load(ctx context.Context) error {
	live, err := s.index.LiveVersion(ctx)
	if err != nil {
		return fmt.Errorf("inference service: %w", err)
	}
	_, err = s.follow(ctx, live, true)
	return err
}

// follow makes the live version's model current and records the outcome for Health, the
// observer and the log. retry reads the artifacts even after a recent failed load.
func (s *Service) follow(ctx context.Context, live string, retry bool) (*served, error) {
	c, err := s.switchTo(ctx, live, retry)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err // cancelled: says nothing about the model
		}
		if c := s.cur.Load(); c != nil && c.model.Version == live {
			// A concurrent check loaded it after this call read an older failure.
			s.setState(nil)
			return c, nil
		}
		s.setState(&unavailable{live: live, err: err})
		return nil, fmt.Errorf("inference service: live embeddings version %s: %w: %w", live, ErrModelUnavailable, err)
	}
	s.setState(nil)
	return c, nil
}

// setState records whether the live version can be served (u == nil) and, when that changed
// (or another unservable version went live), logs it once and tells the observer.
func (s *Service) setState(u *unavailable) {
	s.stateMu.Lock()
	prev := s.unavailable
	s.unavailable = u // the newest reason, even when the state did not change
	if (prev == nil) == (u == nil) && (prev == nil || prev.live == u.live) {
		s.stateMu.Unlock()
		return
	}
	s.obsMu.Lock()
	s.stateMu.Unlock()
	defer s.obsMu.Unlock()
	served := s.Version()
	if u != nil {
		s.log.Error("live embeddings version has no loadable model: not answering until it has one or another version goes live",
			zap.String("version", served), zap.String("live_version", u.live), zap.Error(u.err))
	} else {
		s.log.Info("model of the live embeddings version available again: answering",
			zap.String("version", served), zap.String("live_version", served), zap.String("unavailable_version", prev.live))
	}
	if s.observer != nil {
		s.observer(u != nil)
	}
}

func (s *Service) isUnavailable() bool {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.unavailable != nil
}

// switchTo makes version current (a no-op when it already is) and returns the served state.
func (s *Service) switchTo(ctx context.Context, version string, retry bool) (*served, error) {
	if c := s.cur.Load(); c != nil && c.model.Version == version {
		return c, nil
	}
	if s.cfg.ArtifactsVersion != artifacts.LatestName && version != s.cfg.ArtifactsVersion {
		return nil, fmt.Errorf("live embeddings version %s is not the pinned artifacts version %s", version, s.cfg.ArtifactsVersion)
	}
	m, err := s.model(ctx, version, retry)
	if err != nil {
		return nil, err
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if c := s.cur.Load(); c != nil && c.model.Version == version {
		return c, nil // another goroutine switched first
	}
	next := &served{model: m, cache: map[similarKey][]SimilarItem{}}
	prev := s.cur.Swap(next)
	for v := range s.loaded {
		if v != version && (prev == nil || v != prev.model.Version) {
			delete(s.loaded, v)
		}
	}
	from := ""
	if prev != nil {
		from = prev.model.Version
	}
	s.log.Info("model switched", zap.String("from_version", from), zap.String("version", version))
	return next, nil
}

// model returns the loaded model of version, loading it from the artifacts store if needed.
// Unless retry, a load that failed less than retryLoadAfter ago fails again without I/O.
func (s *Service) model(ctx context.Context, version string, retry bool) (*Model, error) {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if m, ok := s.loaded[version]; ok {
		return m, nil
	}
	if f, ok := s.failed[version]; ok && !retry && s.now().Sub(f.at) < retryLoadAfter {
		return nil, f.err
	}
	start := s.now()
	m, err := LoadModel(ctx, s.store, version)
	if err != nil {
		if ctx.Err() == nil {
			if len(s.failed) >= 16 {
				clear(s.failed) // versions come and go; a bound beats bookkeeping
			}
			s.failed[version] = failedLoad{err: err, at: s.now()}
		}
		return nil, err
	}
	delete(s.failed, version)
	s.loaded[version] = m
	s.log.Info("model loaded", zap.String("version", version), zap.Duration("duration", s.now().Sub(start)))
	return m, nil
}

// Recommend answers a batch: for each user the k best items (one index round trip for all
// users), for each browsed item code its k nearest items (one round trip for the codes not in
// the per-version cache), then one small query for the live version (see Service). An index
// error is returned as is, wrapped; nothing is partially answered. When the live version has
// no loadable model the error wraps ErrModelUnavailable (see Service); while that lasts, a
// batch first reads the live version and is refused without querying the index.
func (s *Service) Recommend(ctx context.Context, users []UserFeatures, items []string, k int) (Result, error) {
	c := s.cur.Load()
	if c == nil {
		return Result{}, ErrNotLoaded
	}
	if s.isUnavailable() {
		live, err := s.index.LiveVersion(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("recommend: %w", err)
		}
		if c, err = s.follow(ctx, live, false); err != nil {
			return Result{}, fmt.Errorf("recommend: %w", err)
		}
	}
	for attempt := 0; ; attempt++ {
		res, err := s.answer(ctx, c, users, items, k)
		if err != nil {
			return Result{}, err
		}
		live, err := s.index.LiveVersion(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("recommend: %w", err)
		}
		if live == c.model.Version {
			return res, nil
		}
		if attempt == maxSwitchAttempts {
			// Versions are swapped seconds apart at the fastest; never answer with a mismatch.
			return Result{}, fmt.Errorf("recommend: embeddings version changed %d times during one batch (now %s)", attempt+1, live)
		}
		if c, err = s.follow(ctx, live, false); err != nil {
			return Result{}, fmt.Errorf("recommend: %w", err)
		}
	}
}

func (s *Service) answer(ctx context.Context, c *served, users []UserFeatures, items []string, k int) (Result, error) {
	res := Result{ModelVersion: c.model.Version, Similar: make([][]SimilarItem, len(items))}
	if len(users) > 0 {
		// The answer is a function of the features, and the events of one batch often come
		// from the same customers: embed and query each distinct user once, then fan out.
		distinct, at := distinctUsers(users)
		rec, err := s.index.ItemsFromUsers(ctx, c.model.UserEmbeddings(distinct), k)
		if err != nil {
			return Result{}, fmt.Errorf("recommend: %w", err)
		}
		if len(rec) != len(distinct) {
			return Result{}, fmt.Errorf("recommend: index answered %d users, asked %d", len(rec), len(distinct))
		}
		res.Recommended = make([][]ScoredItem, len(users))
		for i, j := range at {
			res.Recommended[i] = rec[j]
		}
	}
	var missing []string
	seen := map[string]bool{}
	c.mu.Lock()
	for j, code := range items {
		if code == "" {
			continue
		}
		if r, ok := c.cache[similarKey{code, k}]; ok {
			res.Similar[j] = r
		} else if !seen[code] {
			seen[code] = true
			missing = append(missing, code)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return res, nil
	}
	found, err := s.index.ItemsFromItems(ctx, missing, k)
	if err != nil {
		return Result{}, fmt.Errorf("recommend: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, code := range missing {
		if len(c.cache) < maxSimilarCache {
			c.cache[similarKey{code, k}] = found[code] // nil for an unknown code
		}
	}
	for j, code := range items {
		if code != "" && res.Similar[j] == nil {
			res.Similar[j] = found[code]
		}
	}
	return res, nil
}

// distinctUsers returns the distinct feature tuples of users in first-seen order, and for
// each user the index of its tuple.
func distinctUsers(users []UserFeatures) (distinct []UserFeatures, at []int) {
	at = make([]int, len(users))
	pos := make(map[UserFeatures]int, len(users))
	for i, u := range users {
		j, ok := pos[u]
		if !ok {
			j = len(distinct)
			pos[u] = j
			distinct = append(distinct, u)
		}
		at[i] = j
	}
	return distinct, at
}

// Run loads the serving model if needed, then every cfg.ReloadInterval checks the live
// embeddings version and switches to its model when it changed; when following "latest" it
// also preloads the model latest.json names. A live version whose model cannot be loaded is
// the state Health reports (logged once, retried at every check, cleared when the model
// loads); other failed checks are logged and retried at the next tick. The current model
// keeps serving meanwhile. Run returns nil when ctx ends, or the first Load error if no model
// could ever be loaded. With ReloadInterval 0 it only waits: versions change at Recommend.
func (s *Service) Run(ctx context.Context) error {
	if s.cur.Load() == nil {
		if err := s.Load(ctx); err != nil {
			return err
		}
	}
	if s.cfg.ReloadInterval == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.poll(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("model reload check failed", zap.String("version", s.Version()), zap.Error(err))
		}
	}
}

// poll is one reload check.
func (s *Service) poll(ctx context.Context) error {
	live, err := s.index.LiveVersion(ctx)
	if err != nil {
		return err
	}
	// An unservable live version is reported by follow (Health, observer, one error line),
	// not again at every check.
	_, _ = s.follow(ctx, live, true)
	if s.cfg.ArtifactsVersion != artifacts.LatestName {
		return nil
	}
	latest, err := artifacts.Resolve(ctx, s.store, artifacts.LatestName)
	if err != nil || latest == live {
		return err
	}
	// Preload: the embeddings loader usually follows the publisher, so latest becomes live soon.
	_, err = s.model(ctx, latest, true)
	return err
}
