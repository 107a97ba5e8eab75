// Package csvio reads the one CSV dialect the project's CSV inputs share: the classicmodels
// CSV format of testdata/README.md, which the lab's Glue export follows too. RFC 4180 quoting,
// LF or CR LF after each record, CR LF allowed inside quoted values, and one NULL rule: an empty
// unquoted field is SQL NULL, a quoted empty field ("") is the empty string. The Glue export
// quotes every non-NULL value, so the rule reads it right; encoding/csv cannot tell the two
// apart, which is why this package exists.
package csvio

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Field is one CSV field: SQL NULL (an empty unquoted field) or a value, possibly "".
type Field struct {
	Value string
	Null  bool
}

// Error names the file and the line (1-based, where the record starts) of a bad record.
type Error struct {
	File string
	Line int
	Err  error
}

// Error reads "file:line: reason".
func (e *Error) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

// Unwrap returns the underlying reason.
func (e *Error) Unwrap() error { return e.Err }

// Reasons a record is malformed (wrapped in *Error).
var (
	ErrBareQuote    = errors.New(`bare " in unquoted field`)
	ErrQuoteEnd     = errors.New(`unexpected character after closing "`)
	ErrUnterminated = errors.New(`quoted field not terminated before end of file`)
	// ErrFieldCount is for callers that check a record's width against the header's.
	ErrFieldCount    = errors.New("wrong number of fields")
	maxRecordBytes   = 16 << 20
	errRecordTooLong = fmt.Errorf("record longer than %d bytes", maxRecordBytes)
)

// Reader reads records in the package's dialect. It streams: memory is bounded by the longest
// record. Not safe for concurrent use.
type Reader struct {
	r    *bufio.Reader
	name string
	line int // physical line the next record starts on
	buf  []byte
}

// NewReader reads from r; name appears in errors (usually the file name).
func NewReader(r io.Reader, name string) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), name: name, line: 1}
}

// Read returns the next record, io.EOF after the last one, or an *Error naming the line.
// The returned slice is freshly allocated.
func (c *Reader) Read() ([]Field, error) {
	start := c.line
	fields, lines, err := readRecord(c.r, &c.buf)
	c.line += lines
	if err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, &Error{File: c.name, Line: start, Err: err}
	}
	return fields, nil
}

// Line is the line number where the next record starts.
func (c *Reader) Line() int { return c.line }

// readRecord parses one record. It returns io.EOF only when no byte was left. lines counts
// the newlines consumed, so the caller can keep line numbers right across quoted CR LF.
func readRecord(r io.ByteReader, scratch *[]byte) (fields []Field, lines int, err error) {
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
				if len(buf) >= maxRecordBytes {
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
				if len(buf) >= maxRecordBytes {
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
