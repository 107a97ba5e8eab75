package csvio

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCSVReader(t *testing.T) {
	null := Field{Null: true}
	v := func(s string) Field { return Field{Value: s} }
	tests := []struct {
		name    string
		in      string
		want    [][]Field
		wantErr error
		errLine int
	}{
		{"plain", "a,b\n1,2\n", [][]Field{{v("a"), v("b")}, {v("1"), v("2")}}, nil, 0},
		{"no final newline", "a,b", [][]Field{{v("a"), v("b")}}, nil, 0},
		{"empty field is NULL", "1,,3\n", [][]Field{{v("1"), null, v("3")}}, nil, 0},
		{"trailing empty field is NULL", "1,\n", [][]Field{{v("1"), null}}, nil, 0},
		{"trailing empty field at EOF", "1,", [][]Field{{v("1"), null}}, nil, 0},
		{"quoted empty is empty string", `1,"",3` + "\n", [][]Field{{v("1"), v(""), v("3")}}, nil, 0},
		{"quoted comma and quote", `"54, rue Royale","say ""hi"""` + "\n", [][]Field{{v("54, rue Royale"), v(`say "hi"`)}}, nil, 0},
		{"CR LF inside quotes", "\"line1\r\nline2\",x\nnext,y\n", [][]Field{{v("line1\r\nline2"), v("x")}, {v("next"), v("y")}}, nil, 0},
		{"CR LF record ends", "a,b\r\nc,\"d\"\r\n", [][]Field{{v("a"), v("b")}, {v("c"), v("d")}}, nil, 0},
		{"trailing space kept", "Carine ,x\n", [][]Field{{v("Carine "), v("x")}}, nil, 0},
		{"utf-8", "Montréal,Québec\n", [][]Field{{v("Montréal"), v("Québec")}}, nil, 0},
		{"bare quote", "a,b\"c\n", nil, ErrBareQuote, 1},
		{"junk after quote", "ok\n\"a\"b,c\n", [][]Field{{v("ok")}}, ErrQuoteEnd, 2},
		{"unterminated", "ok\n\"multi\nline\n", [][]Field{{v("ok")}}, ErrUnterminated, 2},
		{"line numbers count quoted newlines", "\"a\nb\"\n\"c\"x\n", [][]Field{{v("a\nb")}}, ErrQuoteEnd, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tc.in), "t.csv")
			var got [][]Field
			var err error
			for {
				var rec []Field
				rec, err = r.Read()
				if err != nil {
					break
				}
				got = append(got, rec)
			}
			if tc.wantErr == nil && err != io.EOF {
				t.Fatalf("got error %v, want none", err)
			}
			if tc.wantErr != nil {
				var ce *Error
				if !errors.Is(err, tc.wantErr) || !errors.As(err, &ce) || ce.Line != tc.errLine || ce.File != "t.csv" {
					t.Fatalf("got error %v, want %v at t.csv:%d", err, tc.wantErr, tc.errLine)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d records %+v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				if len(got[i]) != len(tc.want[i]) {
					t.Fatalf("record %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
				for j := range got[i] {
					if got[i][j] != tc.want[i][j] {
						t.Fatalf("record %d field %d: got %+v, want %+v", i, j, got[i][j], tc.want[i][j])
					}
				}
			}
		})
	}
}

// FuzzCSVRecord checks that the row parser never panics, and that every record it accepts
// survives an encode/parse round trip unchanged.
func FuzzCSVRecord(f *testing.F) {
	for _, s := range []string{
		"a,b\n", "1,,3\n", `"54, rue Royale",x` + "\n", "\"l1\r\nl2\",\"\"\n", "a\r\n", `"a""b"`, "\"x", "a\"b", ",,\n\n", "\"a\"b",
		"S10_1678,1969 Harley Davidson Ultimate Chopper,Motorcycles,1:10,Min Lin Diecast,\"This replica features working kickstand, front suspension.\r\nAll parts\",7933,48.81,95.70\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), "fuzz.csv")
		for n := 0; n < 1000; n++ {
			rec, err := r.Read()
			if err != nil {
				var ce *Error
				if err != io.EOF && !errors.As(err, &ce) {
					t.Fatalf("error %v is neither io.EOF nor an *Error", err)
				}
				return
			}
			if len(rec) == 0 {
				t.Fatal("empty record")
			}
			enc := appendRecord(nil, rec)
			back, err := NewReader(bytes.NewReader(enc), "re.csv").Read()
			if err != nil {
				t.Fatalf("re-parse %q of %+v: %v", enc, rec, err)
			}
			if len(back) != len(rec) {
				t.Fatalf("round trip %+v → %q → %+v", rec, enc, back)
			}
			for i := range rec {
				if back[i] != rec[i] {
					t.Fatalf("field %d: %+v → %q → %+v", i, rec[i], enc, back[i])
				}
			}
		}
	})
}

// appendRecord encodes fields in the package's dialect (quoting only when needed) followed by
// LF: the inverse of readRecord, for the round trip of the fuzz target.
func appendRecord(dst []byte, fields []Field) []byte {
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		if f.Null {
			continue
		}
		if f.Value == "" || bytes.ContainsAny([]byte(f.Value), "\",\r\n") {
			dst = append(dst, '"')
			dst = append(dst, bytes.ReplaceAll([]byte(f.Value), []byte{'"'}, []byte{'"', '"'})...)
			dst = append(dst, '"')
			continue
		}
		dst = append(dst, f.Value...)
	}
	return append(dst, '\n')
}
