package batch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Field is one CSV field. The classicmodels CSV format (testdata/README.md) writes SQL NULL as an empty unquoted field;
// a quoted empty field ("") is an empty string.
type Field struct {
	Value string
	Null  bool
}

// CSVError names the file and the line (1-based, where the record starts) of a bad record.
type CSVError struct {
	File string
	Line int
	Err  error
}

func (e *CSVError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

// Unwrap returns the underlying reason.
func (e *CSVError) Unwrap() error { return e.Err }

// Reasons a record is malformed (wrapped in *CSVError).
var (
	ErrBareQuote        = errors.New(`bare " in unquoted field`)
	ErrQuoteEnd         = errors.New(`unexpected character after closing "`)
	ErrUnterminated     = errors.New(`quoted field not terminated before end of file`)
	errFieldCount       = errors.New("wrong number of fields")
	maxCSVRecordBytes   = 16 << 20
	errRecordTooLong    = fmt.Errorf("record longer than %d bytes", maxCSVRecordBytes)
	errEmptyFileHeader  = errors.New("empty file: missing header row")
	errDuplicateColumns = errors.New("duplicate column in header")
)

// CSVReader reads records in the classicmodels CSV format (testdata/README.md): RFC 4180 quoting, LF (or CR LF) after
// each record, CR LF allowed inside quoted values, NULL as an empty unquoted field. It streams:
// memory is bounded by the longest record. Not safe for concurrent use.
type CSVReader struct {
	r    *bufio.Reader
	name string
	line int // physical line the next record starts on
	buf  []byte
}

// NewCSVReader reads from r; name appears in errors (usually the file name).
func NewCSVReader(r io.Reader, name string) *CSVReader {
	return &CSVReader{r: bufio.NewReaderSize(r, 64<<10), name: name, line: 1}
}

// Read returns the next record, io.EOF after the last one, or a *CSVError naming the line.
// The returned slice is freshly allocated.
func (c *CSVReader) Read() ([]Field, error) {
	start := c.line
	fields, lines, err := readCSVRecord(c.r, &c.buf)
	c.line += lines
	if err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, &CSVError{File: c.name, Line: start, Err: err}
	}
	return fields, nil
}

// Line is the line number where the next record starts.
func (c *CSVReader) Line() int { return c.line }

// readCSVRecord parses one record. It returns io.EOF only when no byte was left. lines counts
// the newlines consumed, so the caller can keep line numbers right across quoted CR LF.
func readCSVRecord(r io.ByteReader, scratch *[]byte) (fields []Field, lines int, err error) {
	b, err := r.ReadByte()
	if err == io.EOF {
		return nil, 0, io.EOF
	}
	if err != nil {
		return nil, 0, err
	}
	buf := (*scratch)[:0]
	defer func() { *scratch = buf[:0] }()
	for {
		// At the start of a field; b is its first byte (or the record end).
		if b == '"' {
			buf = buf[:0]
			for {
				b, err = r.ReadByte()
				if err == io.EOF {
					return nil, lines, ErrUnterminated
				}
				if err != nil {
					return nil, lines, err
				}
				if b == '"' {
					b, err = r.ReadByte()
					if err == nil && b == '"' {
						buf = append(buf, '"')
						continue
					}
					break // closing quote; b/err is the byte after it
				}
				if b == '\n' {
					lines++
				}
				if len(buf) >= maxCSVRecordBytes {
					return nil, lines, errRecordTooLong
				}
				buf = append(buf, b)
			}
			fields = append(fields, Field{Value: string(buf)})
			if err == io.EOF {
				return fields, lines + 1, nil
			}
			if err != nil {
				return nil, lines, err
			}
			if b == '\r' {
				b, err = r.ReadByte()
				if err == io.EOF || (err == nil && b == '\n') {
					return fields, lines + 1, nil
				}
				return nil, lines, ErrQuoteEnd
			}
			switch b {
			case ',':
				b, err = r.ReadByte()
				if err == io.EOF {
					return append(fields, Field{Null: true}), lines + 1, nil
				}
				if err != nil {
					return nil, lines, err
				}
				continue
			case '\n':
				return fields, lines + 1, nil
			default:
				return nil, lines, ErrQuoteEnd
			}
		}
		// Unquoted field.
		buf = buf[:0]
		for {
			switch b {
			case ',', '\n':
			case '"':
				return nil, lines, ErrBareQuote
			default:
				if len(buf) >= maxCSVRecordBytes {
					return nil, lines, errRecordTooLong
				}
				buf = append(buf, b)
				b, err = r.ReadByte()
				if err == io.EOF {
					return append(fields, unquoted(buf)), lines + 1, nil
				}
				if err != nil {
					return nil, lines, err
				}
				continue
			}
			break
		}
		if b == '\n' {
			// A CR before the record's LF ends the record too (CR LF files).
			buf = bytes.TrimSuffix(buf, []byte{'\r'})
			return append(fields, unquoted(buf)), lines + 1, nil
		}
		fields = append(fields, unquoted(buf))
		b, err = r.ReadByte()
		if err == io.EOF {
			return append(fields, Field{Null: true}), lines + 1, nil
		}
		if err != nil {
			return nil, lines, err
		}
	}
}

func unquoted(b []byte) Field {
	if len(b) == 0 {
		return Field{Null: true}
	}
	return Field{Value: string(b)}
}

// appendCSVRecord encodes fields in the classicmodels CSV format (quoting only when needed) followed
// by LF. It is the inverse of readCSVRecord and exists for tests and the fuzz target.
func appendCSVRecord(dst []byte, fields []Field) []byte {
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
