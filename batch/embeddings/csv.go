package embeddings

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"

	"github.com/pgvector/pgvector-go"
)

// Kind says which of the two embeddings files a CSV is.
type Kind int

const (
	// Items is embeddings/item_embeddings.csv: id is a productCode such as S10_1678.
	Items Kind = iota
	// Users is embeddings/user_embeddings.csv: id is a customerNumber (positive int32).
	Users
)

// String names the kind in messages: "item" or "user".
func (k Kind) String() string {
	if k == Users {
		return "user"
	}
	return "item"
}

// MaxDimension is the largest accepted vector length: pgvector's HNSW index limit.
const MaxDimension = 2000

// maxLineBytes bounds one CSV line (2,000 values of up to ~25 characters fit easily).
const maxLineBytes = 1 << 20

// ProductCodeRe is the accepted form of an item id: classicmodels product codes (S10_1678,
// S700_2824) and the generator's longer ones (S10_0001234); at most 15 characters
// (products.productCode is varchar(15)).
var ProductCodeRe = regexp.MustCompile(`^S[0-9]{1,4}_[0-9]{1,10}$`)

var customerNumberRe = regexp.MustCompile(`^[1-9][0-9]{0,9}$`)

// InputError is a rejected embeddings file: which file, which line (1-based; the
// header is line 1; 0 when the problem is not tied to a line) and why. Loads that fail on input
// return it (wrapped); nothing live changes.
type InputError struct {
	File   string // object URL, e.g. s3://bucket/versions/v1/embeddings/item_embeddings.csv
	Line   int
	Reason string
}

// Error names the file, the line when there is one, and the reason.
func (e *InputError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s line %d: %s", e.File, e.Line, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Reason)
}

// embeddingsHeader is the only accepted header (after an optional UTF-8 BOM and CR).
const embeddingsHeader = "id,embedding"

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// parseEmbeddingRow splits one data line (without its line ending) into the raw id and the
// vector's values, appended to vec[:0]. Accepted forms, as pandas and pgvector write them:
//
//	S10_1678,"[0.1,-2.5e-3,...]"      (the lab's form: the vector is one quoted field)
//	"S10_1678","[0.1, -0.0025, ...]"  (quoted id, spaces after commas)
//	103,[0.5]                         (an unquoted vector is accepted only without commas)
//
// Every value must be a finite float32. The returned id aliases line. It never panics; the
// error text is the reason only (the caller adds file and line).
func parseEmbeddingRow(line []byte, vec []float32) ([]byte, []float32, error) {
	vec = vec[:0]
	var id, rest []byte
	if len(line) > 0 && line[0] == '"' {
		end := bytes.IndexByte(line[1:], '"')
		if end < 0 {
			return nil, vec, errors.New("unterminated quoted id")
		}
		id = line[1 : 1+end]
		rest = line[2+end:]
		if len(rest) == 0 || rest[0] != ',' {
			return nil, vec, errors.New("want 2 fields: id,embedding")
		}
		rest = rest[1:]
	} else {
		comma := bytes.IndexByte(line, ',')
		if comma < 0 {
			return nil, vec, errors.New("want 2 fields: id,embedding")
		}
		id, rest = line[:comma], line[comma+1:]
	}
	if len(id) == 0 {
		return nil, vec, errors.New("empty id")
	}
	if bytes.IndexByte(id, '"') >= 0 {
		return nil, vec, errors.New("stray quote in id")
	}
	if len(rest) > 0 && rest[0] == '"' {
		if len(rest) < 2 || rest[len(rest)-1] != '"' {
			return nil, vec, errors.New("embedding: unterminated quoted field or text after it")
		}
		rest = rest[1 : len(rest)-1]
		if bytes.IndexByte(rest, '"') >= 0 {
			return nil, vec, errors.New("embedding: stray quote inside the vector")
		}
	} else if bytes.IndexByte(rest, ',') >= 0 {
		return nil, vec, errors.New("embedding: a vector with several values must be one quoted field")
	}
	if len(rest) < 2 || rest[0] != '[' || rest[len(rest)-1] != ']' {
		return nil, vec, errors.New("embedding: want pgvector text [v1,v2,...]")
	}
	body := rest[1 : len(rest)-1]
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, vec, errors.New("embedding: empty vector")
	}
	for i := 0; len(body) > 0 || i == 0; i++ {
		var tok []byte
		if c := bytes.IndexByte(body, ','); c >= 0 {
			tok, body = body[:c], body[c+1:]
			if len(body) == 0 {
				return nil, vec, fmt.Errorf("embedding: value %d: empty value after trailing comma", i+2)
			}
		} else {
			tok, body = body, nil
		}
		tok = trimBlanks(tok)
		if len(tok) == 0 {
			return nil, vec, fmt.Errorf("embedding: value %d: empty", i+1)
		}
		if len(vec) >= MaxDimension {
			return nil, vec, fmt.Errorf("embedding: more than %d values", MaxDimension)
		}
		f, err := strconv.ParseFloat(string(tok), 32)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, vec, fmt.Errorf("embedding: value %d: %q is not a finite float32", i+1, truncate(tok, 32))
		}
		vec = append(vec, float32(f))
	}
	return id, vec, nil
}

// trimBlanks strips spaces and tabs around a value (bytes.Trim builds a set per call; this is
// the parser's hot loop).
func trimBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// isProductCode reports whether b matches ProductCodeRe, without the regexp engine (hot loop).
func isProductCode(b []byte) bool {
	if len(b) < 4 || len(b) > 15 || b[0] != 'S' {
		return false
	}
	us := bytes.IndexByte(b, '_')
	if us < 2 || us > 5 || us == len(b)-1 || len(b)-us-1 > 10 {
		return false
	}
	for i, c := range b[1:] {
		if i+1 != us && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// embeddingsReader streams one embeddings CSV: it checks the header, validates every row (id
// form, dimension, finiteness, duplicates) and keeps only the current row and the set of ids.
// It implements pgx.CopyFromSource for the staging table (id, embedding).
type embeddingsReader struct {
	kind Kind
	file string
	br   *bufio.Reader
	line int // number of the line last read
	long []byte

	dim     int // 0 until the first row fixes it (or set by the caller)
	dimLine int // line that fixed dim
	rows    int

	seenItems map[string]int
	seenUsers map[int32]int

	id     string
	userID int32
	vec    []float32
	peeked bool
	err    error
}

// newEmbeddingsReader reads the header and the first row (so Dim is known before the COPY
// starts). wantDim > 0 requires that dimension (the user file must match the item file).
func newEmbeddingsReader(r io.Reader, file string, kind Kind, wantDim int) (*embeddingsReader, error) {
	er := &embeddingsReader{kind: kind, file: file, br: bufio.NewReaderSize(r, 64<<10), dim: wantDim}
	if kind == Items {
		er.seenItems = map[string]int{}
	} else {
		er.seenUsers = map[int32]int{}
	}
	head, err := er.readLine()
	if err == io.EOF {
		return nil, &InputError{File: file, Line: 1, Reason: "empty file: want header " + embeddingsHeader}
	}
	if err != nil {
		return nil, err
	}
	// A UTF-8 BOM (Excel, pandas' utf-8-sig) is accepted and ignored.
	head = bytes.TrimPrefix(head, utf8BOM)
	if string(head) != embeddingsHeader {
		return nil, &InputError{File: file, Line: 1, Reason: fmt.Sprintf("header must be %q, got %q", embeddingsHeader, truncate(head, 60))}
	}
	if !er.advance() {
		if er.err == nil {
			return nil, &InputError{File: file, Line: er.line + 1, Reason: "no data rows after the header"}
		}
		return nil, er.err
	}
	er.peeked = true
	return er, nil
}

// readLine returns the next line without "\n" or "\r\n"; io.EOF at the end. A final line
// without a newline counts. The slice is valid until the next call.
func (er *embeddingsReader) readLine() ([]byte, error) {
	b, err := er.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		er.long = append(er.long[:0], b...)
		for err == bufio.ErrBufferFull {
			if len(er.long) > maxLineBytes {
				return nil, &InputError{File: er.file, Line: er.line + 1, Reason: fmt.Sprintf("line longer than %d bytes", maxLineBytes)}
			}
			b, err = er.br.ReadSlice('\n')
			er.long = append(er.long, b...)
		}
		b = er.long
	}
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read %s after line %d: %w", er.file, er.line, err)
	}
	if len(b) == 0 && err == io.EOF {
		return nil, io.EOF
	}
	er.line++
	b = bytes.TrimSuffix(b, []byte{'\n'})
	// CR LF line endings (Windows tools) are accepted: the CR belongs to the line ending.
	b = bytes.TrimSuffix(b, []byte{'\r'})
	return b, nil
}

// advance reads and validates the next row; false at the end or on error (see err).
func (er *embeddingsReader) advance() bool {
	if er.err != nil {
		return false
	}
	line, err := er.readLine()
	if err == io.EOF {
		return false
	}
	if err != nil {
		er.err = err
		return false
	}
	fail := func(format string, args ...any) bool {
		er.err = &InputError{File: er.file, Line: er.line, Reason: fmt.Sprintf(format, args...)}
		return false
	}
	if len(line) == 0 {
		return fail("empty line")
	}
	id, vec, perr := parseEmbeddingRow(line, er.vec)
	er.vec = vec
	if perr != nil {
		return fail("%v", perr)
	}
	switch {
	case er.dim == 0:
		er.dim, er.dimLine = len(vec), er.line
	case len(vec) != er.dim:
		if er.dimLine > 0 {
			return fail("embedding has %d values, want %d (the dimension of line %d)", len(vec), er.dim, er.dimLine)
		}
		return fail("embedding has %d values, want %d (the dimension of the item embeddings)", len(vec), er.dim)
	}
	if er.kind == Items {
		if !isProductCode(id) {
			return fail("id %q is not a product code like S10_1678", truncate(id, 32))
		}
		s := string(id)
		if first, dup := er.seenItems[s]; dup {
			return fail("duplicate id %q (first at line %d)", s, first)
		}
		er.seenItems[s] = er.line
		er.id = s
	} else {
		if !customerNumberRe.Match(id) {
			return fail("id %q is not a customer number (a positive integer)", truncate(id, 32))
		}
		n, err := strconv.ParseInt(string(id), 10, 32)
		if err != nil {
			return fail("id %q is out of integer range", truncate(id, 32))
		}
		if first, dup := er.seenUsers[int32(n)]; dup {
			return fail("duplicate id %d (first at line %d)", n, first)
		}
		er.seenUsers[int32(n)] = er.line
		er.userID = int32(n)
	}
	er.rows++
	return true
}

// Next implements pgx.CopyFromSource.
func (er *embeddingsReader) Next() bool {
	if er.peeked {
		er.peeked = false
		return true
	}
	return er.advance()
}

// Values implements pgx.CopyFromSource. The vector's slice is reused for the next row: pgx
// encodes each row before it calls Next again.
func (er *embeddingsReader) Values() ([]any, error) {
	if er.kind == Items {
		return []any{er.id, pgvector.NewVector(er.vec)}, nil
	}
	return []any{er.userID, pgvector.NewVector(er.vec)}, nil
}

// Err implements pgx.CopyFromSource.
func (er *embeddingsReader) Err() error { return er.err }
