package embeddings

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParseEmbeddingRow(t *testing.T) {
	cases := []struct {
		name    string
		line    string
		wantID  string
		wantVec []float32
		wantErr string
	}{
		{"lab form", `S10_1678,"[0.5,-1.25,3e-2]"`, "S10_1678", []float32{0.5, -1.25, 0.03}, ""},
		{"quoted id and spaces", `"S10_1678","[0.5, -1.25 , 3e-2]"`, "S10_1678", []float32{0.5, -1.25, 0.03}, ""},
		{"one value unquoted", `103,[7]`, "103", []float32{7}, ""},
		{"one value quoted", `103,"[7]"`, "103", []float32{7}, ""},
		{"float32 rounding", `1,"[0.1]"`, "1", []float32{0.1}, ""},
		{"no comma", `S10_1678`, "", nil, "want 2 fields"},
		{"unterminated quoted id", `"S10_1678,[1]`, "", nil, "unterminated quoted id"},
		{"quoted id without comma", `"S10_1678"[1]`, "", nil, "want 2 fields"},
		{"empty id", `,"[1,2]"`, "", nil, "empty id"},
		{"unquoted several values", `S10_1678,[1,2]`, "", nil, "one quoted field"},
		{"text after vector", `S10_1678,"[1,2]",x`, "", nil, "unterminated quoted field or text after it"},
		{"missing brackets", `S10_1678,"1,2"`, "", nil, "want pgvector text"},
		{"empty vector", `S10_1678,"[]"`, "", nil, "empty vector"},
		{"empty value", `S10_1678,"[1,,2]"`, "", nil, "value 2: empty"},
		{"trailing comma", `S10_1678,"[1,2,]"`, "", nil, "trailing comma"},
		{"text in vector", `S10_1678,"[1,abc,2]"`, "", nil, `value 2: "abc" is not a finite float32`},
		{"NaN", `S10_1678,"[1,NaN]"`, "", nil, `value 2: "NaN" is not a finite float32`},
		{"Inf", `S10_1678,"[inf,1]"`, "", nil, `value 1: "inf" is not a finite float32`},
		{"float32 overflow", `S10_1678,"[1e39]"`, "", nil, `value 1: "1e39" is not a finite float32`},
		{"stray quote", `S10_1678,"[1,"2]"`, "", nil, "stray quote"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, vec, err := parseEmbeddingRow([]byte(tc.line), nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if string(id) != tc.wantID {
				t.Errorf("id = %q, want %q", id, tc.wantID)
			}
			if len(vec) != len(tc.wantVec) {
				t.Fatalf("vec = %v, want %v", vec, tc.wantVec)
			}
			for i := range vec {
				if vec[i] != tc.wantVec[i] {
					t.Errorf("vec[%d] = %v, want %v", i, vec[i], tc.wantVec[i])
				}
			}
		})
	}
}

func TestIsProductCodeMatchesRegexp(t *testing.T) {
	for _, s := range []string{"S10_1678", "S700_2824", "S1_1", "S1234_1234567890", "S12345_1", "S10_12345678901",
		"S10_", "S_10", "s10_1678", "S10-1678", "S10_16a8", "S10__1678", "S10_1678 ", "", "S", "S1_", "X10_1678", "S10_1_2"} {
		if got, want := isProductCode([]byte(s)), len(s) <= 15 && ProductCodeRe.MatchString(s); got != want {
			t.Errorf("isProductCode(%q) = %v, ProductCodeRe says %v", s, got, want)
		}
	}
}

// drain reads a whole embeddings CSV the way the COPY does and returns the rows or the error.
func drain(kind Kind, body string) (int, int, error) {
	er, err := newEmbeddingsReader(strings.NewReader(body), "test.csv", kind, 0)
	if err != nil {
		return 0, 0, err
	}
	for er.Next() {
		if _, err := er.Values(); err != nil {
			return 0, 0, err
		}
	}
	return er.rows, er.dim, er.Err()
}

func TestEmbeddingsReader(t *testing.T) {
	good := "id,embedding\nS10_1678,\"[1,2,3]\"\nS10_1949,\"[4,5,6]\"\n"
	cases := []struct {
		name     string
		kind     Kind
		body     string
		wantRows int
		wantLine int    // 0: no error expected
		wantErr  string // part of the reason
	}{
		{"good", Items, good, 2, 0, ""},
		{"no final newline", Items, strings.TrimSuffix(good, "\n"), 2, 0, ""},
		{"UTF-8 BOM accepted", Items, "\xEF\xBB\xBF" + good, 2, 0, ""},
		{"CR LF accepted", Items, strings.ReplaceAll(good, "\n", "\r\n"), 2, 0, ""},
		{"users", Users, "id,embedding\n103,\"[1,2]\"\n112,\"[3,4]\"\n", 2, 0, ""},
		{"empty file", Items, "", 0, 1, "empty file"},
		{"header only", Items, "id,embedding\n", 0, 2, "no data rows"},
		{"wrong header", Items, "productCode,embedding\nS10_1678,\"[1]\"\n", 0, 1, "header must be"},
		{"BOM not at start", Items, "id,embedding\n\xEF\xBB\xBFS10_1678,\"[1]\"\n", 0, 2, "not a product code"},
		{"short vector", Items, good + "S10_2016,\"[1,2]\"\n", 0, 4, "has 2 values, want 3 (the dimension of line 2)"},
		{"long vector", Items, good + "S10_2016,\"[1,2,3,4]\"\n", 0, 4, "has 4 values, want 3"},
		{"NaN", Items, good + "S10_2016,\"[1,NaN,3]\"\n", 0, 4, "not a finite float32"},
		{"Inf", Items, good + "S10_2016,\"[1,-Inf,3]\"\n", 0, 4, "not a finite float32"},
		{"text in vector", Items, good + "S10_2016,\"[1,x,3]\"\n", 0, 4, "not a finite float32"},
		{"duplicate item", Items, good + "S10_1678,\"[1,2,3]\"\n", 0, 4, `duplicate id "S10_1678" (first at line 2)`},
		{"duplicate user", Users, "id,embedding\n103,\"[1]\"\n103,\"[2]\"\n", 0, 3, "duplicate id 103 (first at line 2)"},
		{"bad product code", Items, "id,embedding\nProduct1,\"[1]\"\n", 0, 2, "not a product code"},
		{"user id not int", Users, "id,embedding\nS10_1678,\"[1]\"\n", 0, 2, "not a customer number"},
		{"user id out of range", Users, "id,embedding\n9999999999,\"[1]\"\n", 0, 2, "out of integer range"},
		{"blank line", Items, "id,embedding\nS10_1678,\"[1]\"\n\nS10_1949,\"[1]\"\n", 0, 3, "empty line"},
		{"lone CR", Items, "id,embedding\nS10_1678,\"[1]\"\rS10_1949,\"[1]\"\n", 0, 2, "stray quote"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rows, _, err := drain(tc.kind, tc.body)
			if tc.wantLine == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if rows != tc.wantRows {
					t.Fatalf("rows = %d, want %d", rows, tc.wantRows)
				}
				return
			}
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error = %v, want *InputError", err)
			}
			if ie.Line != tc.wantLine || !strings.Contains(ie.Reason, tc.wantErr) || ie.File != "test.csv" {
				t.Fatalf("error = %v, want test.csv line %d containing %q", err, tc.wantLine, tc.wantErr)
			}
		})
	}
}

func TestEmbeddingsReaderLongLine(t *testing.T) {
	var b strings.Builder
	b.WriteString("id,embedding\nS10_1678,\"[")
	for i := range MaxDimension {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("-0.123456789012345678901234567890")
	}
	b.WriteString("]\"\n")
	rows, dim, err := drain(Items, b.String())
	if err != nil || rows != 1 || dim != MaxDimension {
		t.Fatalf("rows, dim, err = %d, %d, %v; want 1, %d, nil", rows, dim, err, MaxDimension)
	}
	b.Reset()
	b.WriteString("id,embedding\nS10_1678,\"[")
	b.WriteString(strings.Repeat("1 ", maxLineBytes))
	b.WriteString("]\"\n")
	_, _, err = drain(Items, b.String())
	var ie *InputError
	if !errors.As(err, &ie) || ie.Line != 2 || !strings.Contains(ie.Reason, "line longer than") {
		t.Fatalf("error = %v, want line 2 too long", err)
	}
}

// The row parser never panics, and whatever it accepts is a finite vector of bounded length
// that formats back to the same float32 values.
func FuzzParseEmbeddingRow(f *testing.F) {
	for _, s := range []string{
		`S10_1678,"[0.5,-1.25,3e-2]"`, `"S10_1678","[0.5, -1.25]"`, `103,[7]`, `S10_1678,"[1,NaN]"`,
		`,"[]"`, `"`, `x,"`, `x,"[`, `x,[]`, `a,"[1,,]"`, `a,"[0x1p-2]"`, `a,"[1e39]"`, "a,\"[1\r]\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		id, vec, err := parseEmbeddingRow(line, nil)
		if err != nil {
			return
		}
		if len(id) == 0 || len(vec) == 0 || len(vec) > MaxDimension {
			t.Fatalf("accepted id %q with %d values", id, len(vec))
		}
		parts := make([]string, len(vec))
		for i, v := range vec {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("accepted non-finite value %v", v)
			}
			parts[i] = strconv.FormatFloat(float64(v), 'g', -1, 32)
		}
		again := "x,\"[" + strings.Join(parts, ",") + "]\""
		_, vec2, err := parseEmbeddingRow([]byte(again), nil)
		if err != nil || len(vec2) != len(vec) {
			t.Fatalf("re-parse of %q: %v", again, err)
		}
		for i := range vec {
			if vec[i] != vec2[i] {
				t.Fatalf("value %d: %v then %v", i, vec[i], vec2[i])
			}
		}
	})
}

// BenchmarkEmbeddingsReader measures parsing and validation alone (no database): rows/s for
// 32-dimension item rows in the lab's format.
func BenchmarkEmbeddingsReader(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("id,embedding\n")
	const rows = 10000
	for i := range rows {
		sb.WriteString("S10_" + strconv.Itoa(100000+i) + ",\"[")
		for j := range 32 {
			if j > 0 {
				sb.WriteString(",")
			}
			sb.WriteString(strconv.FormatFloat(float64(float32(math.Sin(float64(i*32+j)))), 'g', -1, 32))
		}
		sb.WriteString("]\"\n")
	}
	body := sb.String()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		n, _, err := drain(Items, body)
		if err != nil || n != rows {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
}
