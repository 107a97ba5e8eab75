package httpserve

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recstream_test_total", Help: "t"}, []string{"shard_id"})
	reg.MustRegister(c)
	c.WithLabelValues("shardId-000000000001").Add(3)
	s, err := New("127.0.0.1:0", reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var pgDown atomic.Bool
	s.AddCheck("postgres", func(ctx context.Context) error {
		if pgDown.Load() {
			return errors.New("connection refused")
		}
		return nil
	})
	s.AddCheck("model", func(ctx context.Context) error { return nil })
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `recstream_test_total{shard_id="shardId-000000000001"} 3`) {
		t.Fatalf("/metrics = %d\n%s", code, body)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	pgDown.Store(true)
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, `"postgres":"connection refused"`) || !strings.Contains(body, `"model":"ok"`) {
		t.Fatalf("/readyz with postgres down = %d %s", code, body)
	}
	pgDown.Store(false)
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz did not recover: %d", code)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	s, err := New("127.0.0.1:0", prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for s.Addr() == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New("nonsense", prometheus.NewRegistry(), zaptest.NewLogger(t)); err == nil {
		t.Fatal("bad address accepted")
	}
}
