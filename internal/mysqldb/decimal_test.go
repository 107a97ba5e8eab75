package mysqldb

import (
	"strings"
	"testing"
)

func TestParseDecimal2(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"21000.00", 2100000, true}, {"0.00", 0, true}, {"5", 500, true}, {"3.5", 350, true}, {"-1.25", -125, true},
		{"99999999.99", 9999999999, true}, {"100000000.00", 0, false}, {"1.234", 0, false}, {"", 0, false},
		{"abc", 0, false}, {"1.2.3", 0, false}, {"-", 0, false}, {".", 0, false}, {"1e5", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDecimal2(tc.in)
			if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
				t.Fatalf("ParseDecimal2(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
			if tc.ok && tc.in[0] != '-' && strings.Contains(tc.in, ".") && len(tc.in)-strings.IndexByte(tc.in, '.') == 3 {
				if s := FormatDecimal2(got); s != tc.in {
					t.Fatalf("FormatDecimal2(%d) = %q, want %q", got, s, tc.in)
				}
			}
		})
	}
	if s := FormatDecimal2(-125); s != "-1.25" {
		t.Fatalf("FormatDecimal2(-125) = %q", s)
	}
}
