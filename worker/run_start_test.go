package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

// TestRunWaitsOutDynamoDBAtLibraryStart: the library's Start fails at once when it cannot
// describe the lease table. Run must wait that out like any start-up step (readiness names
// DynamoDB, Run does not return), then start and process when DynamoDB answers again; it
// used to return the error, and the process exited (or, in the command, lived on serving
// /healthz while processing nothing).
func TestRunWaitsOutDynamoDBAtLibraryStart(t *testing.T) {
	e := newTestEnv(t, 1)
	proxy := stacktest.NewProxy(t, strings.TrimPrefix(e.DynamoDB.Endpoint, "http://"))
	proxy.Stop()
	dark := e.DynamoDB
	dark.Endpoint = "http://" + proxy.Addr()
	db, err := awsenv.DynamoDB(context.Background(), dark)
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "w1", FailoverTime: e.Cfg.FailoverTime, Logger: log}, db)
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.build("w1", log, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.chk = store
	st := NewStartup(e.Cfg, log)
	w.SetStartup(st)
	r := start(w)

	stacktest.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool {
		h := st.Health()
		return h != nil && strings.Contains(h.Error(), "dynamodb") && strings.Contains(h.Error(), "attempt 2 failed")
	}, "readiness never said the worker waits for dynamodb (%v)", st.Health())
	select {
	case err := <-r.done:
		t.Fatalf("Run returned during a DynamoDB outage at start: %v", err)
	default:
	}

	proxy.Start()
	stacktest.Eventually(t, 60*time.Second, 50*time.Millisecond, func() bool { return st.Health() == nil },
		"worker never started after DynamoDB came back (%v)", st.Health())
	batch := make([][]byte, 20)
	for i := range batch {
		batch[i] = event(i, "s")
	}
	e.put(t, batch)
	e.waitExactlyOnce(t, "s", len(batch), 90*time.Second)
	if err := r.stop(t); err != nil && !errors.Is(err, ErrShutdownTimeout) {
		t.Fatalf("stop: %v", err)
	}
}
