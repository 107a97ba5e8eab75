package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		default:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "healthy", args: []string{srv.URL + "/healthz"}, want: 0},
		{name: "503", args: []string{srv.URL + "/readyz"}, want: 1},
		{name: "timeout", args: []string{"--timeout", "100ms", srv.URL + "/slow"}, want: 1},
		{name: "refused", args: []string{"http://127.0.0.1:1/healthz"}, want: 1},
		{name: "no url", args: nil, want: 2},
		{name: "not http", args: []string{"ftp://x/healthz"}, want: 2},
		{name: "bad flag", args: []string{"--nope", srv.URL}, want: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(tc.args, io.Discard); got != tc.want {
				t.Errorf("run(%q) = %d, want %d", tc.args, got, tc.want)
			}
		})
	}
}
