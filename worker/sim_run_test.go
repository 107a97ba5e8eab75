//go:build leasesim

// The lease simulation's runs take minutes (TestLeaseSim) to more than a quarter of an hour
// (TestLeaseCostFlatInWorkers): they build only with the leasesim tag (make bench-leases), so
// go test ./... neither runs nor skips them.

package worker

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/leasesim"
)

// TestLeaseSim runs the simulation over a grid and prints the table of docs/benchmarks.md.
// RECSTREAM_LEASE_SIM selects it: "all" (16, 64, 256 and 1000 shards x 4, 16 and 100
// workers) or a list like "1000x100,256x16"; RECSTREAM_LEASE_SIM_ROLLING caps the workers
// restarted one by one (default: all of them).
func TestLeaseSim(t *testing.T) {
	spec := os.Getenv("RECSTREAM_LEASE_SIM")
	if spec == "" {
		spec = "16x4,64x16,256x16" // make bench-leases's grid
	}
	if spec == "all" {
		spec = "16x4,16x16,16x100,64x4,64x16,64x100,256x4,256x16,256x100,1000x4,1000x16,1000x100"
	}
	rollCap := -1
	if v := os.Getenv("RECSTREAM_LEASE_SIM_ROLLING"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("RECSTREAM_LEASE_SIM_ROLLING: %v", err)
		}
		rollCap = n
	}
	simQuiet(t)
	var rows []string
	for _, cell := range strings.Split(spec, ",") {
		s, w, ok := strings.Cut(strings.TrimSpace(cell), "x")
		shards, err1 := strconv.Atoi(s)
		workers, err2 := strconv.Atoi(w)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("RECSTREAM_LEASE_SIM: bad cell %q (want SHARDSxWORKERS)", cell)
		}
		roll := workers
		if rollCap >= 0 {
			roll = min(roll, rollCap)
		}
		began := time.Now()
		r := runSim(t, shards, workers, simOptions{window: time.Minute, failure: true, rolling: roll, rollingGap: 5 * time.Second})
		rows = append(rows, r.row())
		t.Logf("%s  (%.0f s wall)", r.row(), time.Since(began).Seconds())
	}
	var b bytes.Buffer
	fmt.Fprintln(&b, simTableHeader())
	for _, r := range rows {
		fmt.Fprintln(&b, r)
	}
	t.Logf("lease simulation (virtual time; on-demand $%.3f per million RRU, $%.3f per million WRU):\n%s",
		leasesim.PricePerMillionRRU, leasesim.PricePerMillionWRU, b.String())
}

// sortedKeys is a helper for stable logs.
func sortedKeys(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestLeaseCostFlatInWorkers: the fleet's DynamoDB read and write units per minute at 256
// shards are the same (within 20 %) for 16 and 100 workers, and grow at most linearly from
// 64 to 256 shards (16 workers). Before the leader-assigned leases, every worker Scanned the
// table twice a second: 100 workers read 6 times what 16 did.
func TestLeaseCostFlatInWorkers(t *testing.T) {
	// At 100 workers the simulation needs more than 15 minutes of this machine's CPU
	// (docs/benchmarks.md): built only with the leasesim tag, run only when named.
	simQuiet(t)
	o := simOptions{window: time.Minute}
	small := runSim(t, 64, 16, o)
	few := runSim(t, 256, 16, o)
	many := runSim(t, 256, 100, o)
	for _, r := range []simResult{small, few, many} {
		t.Log(r.row())
		t.Logf("%dx%d requests: %v", r.Shards, r.Workers, r.Usage.Requests)
	}
	fr, fw := few.perMinute()
	mr, mw := many.perMinute()
	sr, sw := small.perMinute()
	within := func(name string, a, b float64) {
		if b > a*1.2 || b < a/1.2 {
			t.Errorf("%s per minute at 256 shards: %.0f with 16 workers, %.0f with 100 (more than 20 %% apart)", name, a, b)
		}
	}
	within("RCU", fr, mr)
	within("WCU", fw, mw)
	for _, c := range []struct {
		name        string
		at64, at256 float64
	}{{"RCU", sr, fr}, {"WCU", sw, fw}} {
		if c.at256 > c.at64*4*1.2 {
			t.Errorf("%s per minute: %.0f at 64 shards, %.0f at 256: more than linear", c.name, c.at64, c.at256)
		}
	}
}
