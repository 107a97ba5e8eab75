package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/stacktest"
)

var publishedRe = regexp.MustCompile(`published artifacts version (m-[0-9a-f]{12})`)

// runCLI runs one recstream command line with the repository's config.yaml and env and returns
// what it printed (logs go to the process's stderr, not here).
func runCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	full := append([]string{"--config", "../../config.yaml", "--log-format", "json"}, args...)
	if code := run(ctx, full, env, &out, &errb); code != exitOK {
		t.Fatalf("recstream %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String() + errb.String()
}

// TestTrainFromETLDatasetEqualsLabCSV: seed MariaDB from testdata/classicmodels, `batch etl` to a
// file:// datalake, `train` through the ETL's manifest. The dataset is the lab's join, so
// training from it must publish exactly the version that training from the lab's CSV publishes
// (same seed, same data, any row order).
func TestTrainFromETLDatasetEqualsLabCSV(t *testing.T) {
	data := stacktest.ClassicModels(t)
	cfg, _ := testMySQL(t, "rs_train_")
	env := []string{"RECSTREAM_MYSQL_DSN=" + cfg.DSN, "RECSTREAM_MYSQL_PASSWORD=" + cfg.Password}
	lake, arts1, arts2 := t.TempDir(), t.TempDir(), t.TempDir()

	runCLI(t, env, "batch", "seed", "--from", data)
	runCLI(t, env, "batch", "etl", "--location", "file://"+lake)
	out := runCLI(t, env, "train", "--from", "file://"+lake, "--to", "file://"+arts1)
	m := publishedRe.FindStringSubmatch(out)
	if m == nil || !regexp.MustCompile(`(?m)^ +warm +506 ratings +1\.0\d{3} `).MatchString(out) || !regexp.MustCompile(`(?m)^ +cold +20 customers `).MatchString(out) {
		t.Fatalf("train output:\n%s", out)
	}
	out2 := runCLI(t, nil, "train", "--csv", stacktest.LabFile(t, "ratings_ml_training_dataset.csv"), "--to", "file://"+arts2)
	m2 := publishedRe.FindStringSubmatch(out2)
	if m2 == nil || m2[1] != m[1] {
		t.Fatalf("version from the ETL dataset %v, from the lab CSV %v", m, m2)
	}
	for _, dir := range []string{arts1, arts2} {
		b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
		if err != nil || !strings.Contains(string(b), `"version":"`+m[1]+`"`) {
			t.Fatalf("%s/latest.json: %s (%v)", dir, b, err)
		}
	}
}

func TestTrainCommandUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--epochs", "0"}, "epochs: must be >= 1"},
		{[]string{"train", "--csv", filepath.Join(t.TempDir(), "none.csv"), "--publish=false"}, "--csv: open"},
		{[]string{"train", "extra"}, "unexpected arguments: extra"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"--config", "../../config.yaml"}, tc.args...), nil, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Fatalf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, errb.String(), exitUsage, tc.want)
		}
	}
}
