// Package httpserve serves a long-running process's operational endpoints: /metrics
// (Prometheus), /healthz (the process is alive) and /readyz (its dependencies answer).
package httpserve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Check reports whether one dependency is usable; it must honour ctx's deadline.
type Check func(ctx context.Context) error

// Server is the operational HTTP endpoint. Checks may be added at any time, also while Run
// serves (a worker adds its dependencies' checks once start-up found them).
type Server struct {
	addr    string
	reg     *prometheus.Registry
	log     *zap.Logger
	timeout time.Duration

	mu     sync.Mutex
	checks map[string]Check
	ln     net.Listener
}

// New validates its arguments; it does no I/O.
func New(addr string, reg *prometheus.Registry, log *zap.Logger) (*Server, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("metrics listen address %q: %w", addr, err)
	}
	if reg == nil || log == nil {
		return nil, errors.New("httpserve: registry and logger are required")
	}
	return &Server{addr: addr, reg: reg, log: log, timeout: 2 * time.Second, checks: map[string]Check{}}, nil
}

// AddCheck registers a readiness check under name ("postgres", "dynamodb", "model").
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// Addr returns the bound address once Run has started listening ("" before).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Handler returns the mux (for tests and embedding).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.ready)
	return mux
}

// ready runs every check concurrently; 200 when all pass, 503 with the failures otherwise.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	results := map[string]string{}
	for name, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := "ok"
			if err := c(ctx); err != nil {
				msg = err.Error()
			}
			mu.Lock()
			results[name] = msg
			mu.Unlock()
		}()
	}
	wg.Wait()
	names := make([]string, 0, len(results))
	failed := false
	for n, m := range results {
		names = append(names, n)
		failed = failed || m != "ok"
	}
	sort.Strings(names)
	w.Header().Set("Content-Type", "application/json")
	if failed {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": !failed, "checks": results})
}

// Run listens and serves until ctx is done, then shuts down within 2 s.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving metrics", zap.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}
