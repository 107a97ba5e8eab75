package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/recstream/recstream/internal/stacktest"
	"github.com/recstream/recstream/worker"
)

// edgeEvents are events a buggy or hostile producer sends, each with a unique session id
// (edge-<n>) so the test can find where it went. Several are valid and must be written.
func edgeEvents() [][]byte {
	tmpl := `{"session_id":"%s","customer_number":%s,"city":%s,"country":"USA","credit_limit":%s,"browse_history":%s}`
	hist := `[{"product_code":"S10_1678","quantity":"1","in_shopping_cart":true}]`
	cases := []struct{ customer, city, credit, hist string }{
		{"103", `"Nantes"`, "1e300", hist},        // overflows float32: invalid_field
		{"103", `"Nantes"`, "1e38", hist},         // above the documented range: invalid_field
		{"103", `"Nantes"`, "5e-324", hist},       // smallest subnormal: valid
		{"103", `"Nantes"`, "-0.0", hist},         // negative zero: valid, stored as 0
		{"103", `"Nantes"`, "1e12", hist},         // the top of the range: valid
		{"103", `"Nantes"`, "21000", `[]`},        // empty browse history: valid, no anchor
		{"103", `"Nan\u0000tes"`, "21000", hist},  // NUL in a string: invalid_field
		{"103", `"\ud800Nantes"`, "21000", hist},  // lone surrogate escape: valid (U+FFFD)
		{"2147483648", `"Nantes"`, "21000", hist}, // above INT: invalid_field
		{"2147483647", `"Nantes"`, "21000", hist}, // INT max: valid
		{"103", `"Nantes"`, "21000", `[{"product_code":"x'); DROP TABLE item_emb; --","quantity":1,"in_shopping_cart":true}]`}, // SQL: valid, no similar items
		{"103", `"Nantes"`, "21000", `[{"product_code":"S10_1678","quantity":1e300,"in_shopping_cart":true}]`},                 // invalid_field
		{"103", `"Nantes"`, "21000", `[{"product_code":"\u0000","quantity":1,"in_shopping_cart":true}]`},                       // NUL product: invalid_field
		{"103", `"` + strings.Repeat("é", 128) + `"`, "21000", hist},                                                           // 256 bytes: valid
	}
	var out [][]byte
	for i, c := range cases {
		out = append(out, []byte(fmt.Sprintf(tmpl, fmt.Sprintf("edge-%03d", i), c.customer, c.city, c.credit, c.hist)))
	}
	// A seeded corpus of schema-valid events with extreme values, as a fuzzer would make.
	rng := rand.New(rand.NewPCG(7, 11))
	word := func() string {
		runes := []rune{'a', 'Z', 'é', 'ß', '東', '🙂', '"', '\\', '\t', ' ', '\u2028', '\x7f'}
		var b strings.Builder
		for range rng.IntN(40) {
			b.WriteRune(runes[rng.IntN(len(runes))])
		}
		return b.String()
	}
	for i := range 150 {
		credit := math.Pow(10, rng.Float64()*12) // 1 .. 1e12, log-uniform
		if i%10 == 0 {
			credit = 0
		}
		items := make([]map[string]any, rng.IntN(5))
		for j := range items {
			items[j] = map[string]any{"product_code": "P" + word(), "quantity": rng.IntN(1_000_001), "in_shopping_cart": rng.IntN(2) == 0}
		}
		b, _ := json.Marshal(map[string]any{"session_id": fmt.Sprintf("edge-%03d", len(cases)+i), "customer_number": rng.Int32(),
			"city": word(), "country": word(), "credit_limit": credit, "browse_history": items})
		out = append(out, b)
	}
	return out
}

// TestSystemEdgeEventsNeverStall is the poison-pill scenario over the real stack (Kinesis,
// DynamoDB, PostgreSQL + pgvector, a trained model): edge events mixed into normal traffic.
// Every normal event is written exactly once; every edge event is written if Decode accepts
// it (the model and pgvector can answer whatever the decoder lets through) and is in errors/
// with the decoder's reason otherwise; no shard stalls and /readyz stays green.
func TestSystemEdgeEventsNeverStall(t *testing.T) {
	if testing.Short() {
		t.Skip("system test skipped with -short (CI runs it)")
	}
	se := newSystemEnv(t, 2)
	stop, logs := se.startReady(t)

	const normal = 200
	edges := edgeEvents()
	se.produce(t, normal/2, 3)
	in := &kinesis.PutRecordsInput{StreamName: aws.String(se.stream)}
	for i, b := range edges {
		in.Records = append(in.Records, ktypes.PutRecordsRequestEntry{Data: b, PartitionKey: aws.String(fmt.Sprint(i))})
	}
	out, err := se.kc.PutRecords(context.Background(), in)
	if err != nil || aws.ToInt32(out.FailedRecordCount) != 0 {
		t.Fatalf("put edge events: %v", err)
	}
	se.produce(t, normal/2, 4)

	lim := worker.Limits{MaxBytes: worker.DefaultConfig().MaxEventBytes, MaxBrowseHistory: worker.DefaultConfig().MaxBrowseHistory}
	wantWritten, wantError := map[string]bool{}, map[string]worker.Reason{}
	for i, b := range edges {
		id := fmt.Sprintf("edge-%03d", i)
		if _, err := worker.Decode(b, lim); err != nil {
			wantError[id] = err.(*worker.DecodeError).Reason
		} else {
			wantWritten[id] = true
		}
	}
	if len(wantError) != 6 || len(wantWritten) < 150 {
		t.Fatalf("corpus: %d valid, %d invalid edge events", len(wantWritten), len(wantError))
	}

	var got systemOutput
	stacktest.Eventually(t, 120*time.Second, 500*time.Millisecond, func() bool {
		got = readSystemOutput(t, se.outDir)
		return got.records >= normal+len(wantWritten) && len(got.errors) >= len(wantError)
	}, "not everything written; logs:\n%s", logs)
	if code, body := se.get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d after the edge events: %s", code, body)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("worker exit code %d; logs:\n%s", code, logs)
	}
	got = readSystemOutput(t, se.outDir)
	normals := 0
	for id, n := range got.count {
		if n != 1 {
			t.Errorf("session %q written %d times", id, n)
		}
		if !strings.HasPrefix(id, "edge-") {
			normals++
		} else if !wantWritten[id] {
			t.Errorf("edge event %s written, want it in errors/ as %s", id, wantError[id])
		}
	}
	if normals != normal {
		t.Errorf("%d normal events written, want %d", normals, normal)
	}
	for id := range wantWritten {
		if got.count[id] != 1 {
			t.Errorf("valid edge event %s not written (errors/ has %q)", id, got.errors[id])
		}
	}
	for id, reason := range wantError {
		if got.errors[id] != reason {
			t.Errorf("edge event %s: errors/ reason %q, want %q", id, got.errors[id], reason)
		}
	}
}

type systemOutput struct {
	records int
	count   map[string]int           // session id → records written
	errors  map[string]worker.Reason // session id (edge events) → reason
}

// readSystemOutput counts the records of the worker's output per session id and the rejected
// events' reasons.
func readSystemOutput(t *testing.T, dir string) systemOutput {
	t.Helper()
	all := readSystemObjects(t, dir)
	o := systemOutput{records: len(all.records), count: map[string]int{}, errors: map[string]worker.Reason{}}
	for _, r := range all.records {
		o.count[r.SessionID]++
	}
	for _, er := range all.errors {
		var ev struct {
			SessionID string `json:"session_id"`
		}
		_ = json.Unmarshal(er.PayloadBase64, &ev)
		o.errors[ev.SessionID] = er.Reason
	}
	return o
}
