package worker

import (
	"bytes"
	"encoding/json"
)

// The scanner below runs only on input json.Valid accepted, so it need not diagnose syntax;
// it still bounds-checks every index and reports a bad_json error rather than panic if its
// assumptions ever fail.

var errScan = &DecodeError{Reason: ReasonBadJSON, Msg: "malformed JSON"}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just after the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errScan
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				j, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errScan
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		if j == i {
			return 0, errScan
		}
		return j, nil
	}
}

// skipString returns the index just after the string starting at b[i] (a quote).
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errScan
}

// eachMember calls fn with each member's raw key token (quoted) and raw value of the object
// starting at b[i], and returns the index after it.
func eachMember(b []byte, i int, fn func(key, val []byte)) (int, error) {
	if i >= len(b) || b[i] != '{' {
		return 0, errScan
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		k, err := skipString(b, i)
		if err != nil || b[i] != '"' {
			return 0, errScan
		}
		key := b[i:k]
		i = skipSpace(b, k)
		if i >= len(b) || b[i] != ':' {
			return 0, errScan
		}
		i = skipSpace(b, i+1)
		j, err := skipValue(b, i)
		if err != nil {
			return 0, err
		}
		fn(key, b[i:j])
		i = skipSpace(b, j)
		if i >= len(b) {
			return 0, errScan
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, errScan
		}
	}
}

// arrayOfObjects appends to items the elements of a raw array whose elements are all objects
// or null; ok is false for anything else (encoding/json would refuse it as
// []map[string]json.RawMessage).
func arrayOfObjects(b []byte, items [][]byte) (_ [][]byte, ok bool) {
	if len(b) == 0 || b[0] != '[' {
		return nil, false
	}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == ']' {
		return items, true
	}
	for i < len(b) {
		if b[i] != '{' && !bytes.HasPrefix(b[i:], []byte("null")) {
			return nil, false
		}
		j, err := skipValue(b, i)
		if err != nil {
			return nil, false
		}
		items = append(items, b[i:j])
		i = skipSpace(b, j)
		if i >= len(b) {
			return nil, false
		}
		if b[i] == ']' {
			return items, true
		}
		if b[i] != ',' {
			return nil, false
		}
		i = skipSpace(b, i+1)
	}
	return nil, false
}

func isNullValue(v []byte) bool { return string(v) == "null" }

// plainString reports whether a raw string token needs no unescaping or UTF-8 repair.
func plainString(tok []byte) bool {
	for _, c := range tok[1 : len(tok)-1] {
		if c == '\\' || c >= 0x80 || c < 0x20 {
			return false
		}
	}
	return true
}

// unquoteKey returns a key token's text cheaply for the common case (no escapes, ASCII);
// other keys are decoded by encoding/json.
func unquoteKey(tok []byte) []byte {
	if len(tok) >= 2 && plainString(tok) {
		return tok[1 : len(tok)-1]
	}
	return []byte(jsonString(tok))
}

// jsonString decodes a raw string token as encoding/json does (escapes, invalid UTF-8 → U+FFFD).
func jsonString(tok []byte) string {
	if len(tok) >= 2 && plainString(tok) {
		return string(tok[1 : len(tok)-1])
	}
	var s string
	if err := json.Unmarshal(tok, &s); err != nil {
		return string(tok)
	}
	return s
}

func isQuotedValue(v []byte) bool { return len(v) > 0 && v[0] == '"' }

// isNumberValue reports whether a raw value is a JSON number literal.
func isNumberValue(v []byte) bool { return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9') }
