package deploy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/deploy"
)

func TestParseExpression(t *testing.T) {
	base := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC) // a Monday
	tests := []struct {
		expr    string
		next    string // first firing after base, "" when rate
		rate    time.Duration
		wantErr string
	}{
		{expr: "cron(0 2 * * ? *)", next: "2026-03-02 02:00"},
		{expr: "cron(30 3 ? * MON-FRI *)", next: "2026-03-02 03:30"},
		{expr: "cron(0 4 ? * SUN *)", next: "2026-03-08 04:00"},
		{expr: "cron(0 4 ? * 1 *)", next: "2026-03-08 04:00"}, // 1 = SUN in EventBridge
		{expr: "cron(15 */6 * * ? *)", next: "2026-03-02 00:15"},
		{expr: "cron(0 0 1 JAN,JUL ? 2027)", next: "2027-01-01 00:00"},
		{expr: "cron(0/20 10-11 15 * ? *)", next: "2026-03-15 10:00"},
		{expr: "rate(5 minutes)", rate: 5 * time.Minute},
		{expr: "rate(1 hour)", rate: time.Hour},
		{expr: "rate(1 day)", rate: 24 * time.Hour},
		{expr: "rate(1 hours)", wantErr: "singular"},
		{expr: "rate(2 day)", wantErr: "singular"},
		{expr: "rate(0 minutes)", wantErr: "positive"},
		{expr: "rate(5 weeks)", wantErr: "unit"},
		{expr: "cron(0 2 * * * *)", wantErr: "exactly one"},
		{expr: "cron(0 2 ? * ? *)", wantErr: "exactly one"},
		{expr: "cron(0 2 * * ?)", wantErr: "6 fields"},
		{expr: "cron(60 2 * * ? *)", wantErr: "out of range"},
		{expr: "cron(0 2 L * ? *)", wantErr: "not supported"},
		{expr: "cron(0 2 ? * 2#1 *)", wantErr: "not supported"},
		{expr: "cron(0 5-2 * * ? *)", wantErr: "range start"},
		{expr: "cron(0 2 * * ? 1969)", wantErr: "out of range"},
		{expr: "0 2 * * *", wantErr: "want cron"},
		{expr: "at(2026-03-02T02:00:00)", wantErr: "want cron"},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			e, err := deploy.ParseExpression(tc.expr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.rate != 0 {
				if e.IsCron() || e.Rate != tc.rate {
					t.Fatalf("rate %s, want %s", e.Rate, tc.rate)
				}
				return
			}
			n, ok := e.Next(base)
			if !ok || n.Format("2006-01-02 15:04") != tc.next {
				t.Errorf("Next(%s) = %s (%v), want %s", base.Format(time.DateTime), n.Format("2006-01-02 15:04"), ok, tc.next)
			}
		})
	}
}

// FuzzParseExpression: any input either errors or yields an expression whose Next does not
// panic.
func FuzzParseExpression(f *testing.F) {
	for _, s := range []string{"cron(0 2 * * ? *)", "cron(0/20 10-11 15 * ? *)", "rate(5 minutes)", "cron(0 4 ? * MON-FRI 2026-2030)", "rate(1 day)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := deploy.ParseExpression(s)
		if err != nil {
			return
		}
		if e.IsCron() {
			// Bound the search: a fuzzed year list may never fire; Next must still return.
			e.Next(time.Date(2199, 12, 1, 0, 0, 0, 0, time.UTC))
		}
	})
}

func TestShellWords(t *testing.T) {
	tests := []struct {
		in      string
		want    string // words joined by |
		wantErr bool
	}{
		{in: `go build -ldflags="-s -w -buildid=" -o /out/x ./cmd/x`, want: `go|build|-ldflags=-s -w -buildid=|-o|/out/x|./cmd/x`},
		{in: `a 'b c' "d \" e" f\ g`, want: `a|b c|d " e|f g`},
		{in: `  ""  `, want: ``},
		{in: `"open`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := deploy.ShellWords(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && strings.Join(got, "|") != tc.want {
				t.Errorf("ShellWords(%q) = %q, want %q", tc.in, strings.Join(got, "|"), tc.want)
			}
		})
	}
}
