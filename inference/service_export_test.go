package inference

import (
	"context"
	"time"
)

// Hooks for the external service tests (package inference_test, which can train models with
// package train).

// RetryLoadAfter is retryLoadAfter.
const RetryLoadAfter = retryLoadAfter

// SetNow replaces the service's clock.
func (s *Service) SetNow(now func() time.Time) { s.now = now }

// FailedAt is when the last failed load of version happened (zero if none is remembered).
func (s *Service) FailedAt(version string) time.Time {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	return s.failed[version].at
}

// Poll runs one reload check.
func (s *Service) Poll(ctx context.Context) error { return s.poll(ctx) }
