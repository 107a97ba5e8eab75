package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/deploy"
)

const crontabPath = "cron/recstream.crontab"

// TestCrontab: the host crontab runs etl before train, embeddings only after train succeeded,
// and treats etl's exit code 3 (lock held) as "skipped", not as a failure.
func TestCrontab(t *testing.T) {
	jobs, err := deploy.ReadCrontab(crontabPath)
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]time.Time{}
	for _, j := range jobs {
		// The five-field host cron equals EventBridge's six fields with "?" day-of-week and any year.
		f := strings.Fields(j.Schedule)
		if f[2] != "*" && f[4] != "*" {
			t.Fatalf("%s:%d: set day-of-month or day-of-week, not both", crontabPath, j.Line)
		}
		dow := "?"
		if f[4] != "*" {
			dow, f[2] = f[4], "?"
		}
		expr, err := deploy.ParseExpression("cron(" + strings.Join([]string{f[0], f[1], f[2], f[3], dow, "*"}, " ") + ")")
		if err != nil {
			t.Fatalf("%s:%d: %v", crontabPath, j.Line, err)
		}
		first, ok := expr.Next(time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC))
		if !ok {
			t.Fatalf("%s:%d: never fires", crontabPath, j.Line)
		}
		if j.User == "root" {
			t.Errorf("%s:%d: runs as root; use the recstream user", crontabPath, j.Line)
		}
		if len(j.Runs) == 0 {
			t.Errorf("%s:%d: runs no recstream command", crontabPath, j.Line)
		}
		for _, argv := range j.Runs {
			sub := subcommand(argv)
			at[sub] = first
			if sub == "batch etl" && !strings.Contains(j.Command, "-eq 3") {
				t.Errorf("%s:%d: batch etl must treat exit code 3 (lock held by a running etl) apart from failures", crontabPath, j.Line)
			}
		}
		if len(j.Runs) == 2 && !strings.Contains(j.Command, " && ") {
			t.Errorf("%s:%d: chain train && batch embeddings so embeddings load only after a successful train", crontabPath, j.Line)
		}
	}
	etl, train, emb := at["batch etl"], at["train"], at["batch embeddings"]
	if etl.IsZero() || train.IsZero() || emb.IsZero() {
		t.Fatalf("%s: want batch etl, train and batch embeddings, got %v", crontabPath, deploy.SortedKeys(at))
	}
	if train.Sub(etl) < 30*time.Minute || emb.Before(train) {
		t.Errorf("%s: etl at %s, train at %s, embeddings at %s: want etl at least 30 min before train", crontabPath, etl.Format("15:04"), train.Format("15:04"), emb.Format("15:04"))
	}
}

// subcommand returns the subcommand of a recstream argv (skipping global flags).
func subcommand(argv []string) string {
	var words []string
	for i := 0; i < len(argv); i++ {
		switch {
		case argv[i] == "--config" || argv[i] == "--log-format":
			i++
		case strings.HasPrefix(argv[i], "-"):
			if len(words) > 0 {
				return strings.Join(words, " ")
			}
		default:
			words = append(words, argv[i])
		}
	}
	return strings.Join(words, " ")
}

func TestReadCrontab(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    [][]string
		wantErr string
	}{
		{name: "env and comments", text: "# c\nSHELL=/bin/sh\n\n0 2 * * * u /usr/local/bin/recstream batch etl >>x 2>&1\n", want: [][]string{{"batch", "etl"}}},
		{name: "chained", text: "0 3 * * * u recstream train && recstream --config c.yaml batch embeddings --force; echo\n",
			want: [][]string{{"train"}, {"--config", "c.yaml", "batch", "embeddings", "--force"}}},
		{name: "semicolon glued", text: "0 3 * * * u recstream train; echo done\n", want: [][]string{{"train"}}},
		{name: "too few fields", text: "0 3 * * * recstream\n", wantErr: ":1:"},
		{name: "percent", text: "0 3 * * * u date +%s\n", wantErr: "unescaped %"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "crontab")
			if err := os.WriteFile(p, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			jobs, err := deploy.ReadCrontab(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got [][]string
			for _, j := range jobs {
				got = append(got, j.Runs...)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("runs %q, want %q", got, tc.want)
			}
			for i := range got {
				if strings.Join(got[i], " ") != strings.Join(tc.want[i], " ") {
					t.Errorf("run %d: %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// FuzzParseCrontab: no input panics; every parsed job has a five-field schedule and a user.
func FuzzParseCrontab(f *testing.F) {
	if b, err := os.ReadFile(crontabPath); err == nil {
		f.Add(string(b))
	}
	f.Add("0 3 * * * u recstream train && recstream --config c.yaml batch embeddings; echo\n")
	f.Add("0 3 * * * u recstream\n0 3 * * * u x recstream ; recstream\n")
	f.Fuzz(func(t *testing.T, s string) {
		jobs, err := deploy.ParseCrontab("fuzz", strings.NewReader(s))
		if err != nil {
			return
		}
		for _, j := range jobs {
			if len(strings.Fields(j.Schedule)) != 5 || j.User == "" {
				t.Fatalf("job %+v: bad schedule or user", j)
			}
		}
	})
}

// FuzzShellWords: no input panics, and words never contain unquoted separators' quotes.
func FuzzShellWords(f *testing.F) {
	f.Add(`go build -trimpath -ldflags="-s -w -buildid=" -o /out/recstream ./cmd/recstream`)
	f.Add(`a 'b c' "d \" e" f\ g`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = deploy.ShellWords(s)
	})
}
