package leasesim

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// This file evaluates the subset of DynamoDB's expression language the lease store sends:
//
//	condition := or
//	or        := and { "OR" and }
//	and       := unary { "AND" unary }
//	unary     := "NOT" unary | "(" or ")" | func "(" path ")" | path op operand
//	func      := attribute_exists | attribute_not_exists
//	op        := "=" | "<>"
//	update    := { ("SET" path "=" operand { "," path "=" operand }) | ("REMOVE" path { "," path }) }
//
// A path is #name (from ExpressionAttributeNames) or a plain attribute name, an operand a path
// or :value (from ExpressionAttributeValues). Anything else is a ValidationException, so a
// lease store change that sends something new fails the simulation instead of being
// mis-simulated.

type item = map[string]types.AttributeValue

type lexer struct {
	toks []string
	pos  int
}

func lex(s string) (*lexer, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := rune(s[i])
		switch {
		case unicode.IsSpace(c):
			i++
		case strings.ContainsRune("(),=", c):
			toks = append(toks, string(c))
			i++
		case c == '<' && i+1 < len(s) && s[i+1] == '>':
			toks = append(toks, "<>")
			i += 2
		case c == '#' || c == ':' || c == '_' || unicode.IsLetter(c) || unicode.IsDigit(c):
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] == '.' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		default:
			return nil, fmt.Errorf("unsupported character %q in expression %q", c, s)
		}
	}
	return &lexer{toks: toks}, nil
}

func (l *lexer) peek() string {
	if l.pos < len(l.toks) {
		return l.toks[l.pos]
	}
	return ""
}

func (l *lexer) next() string {
	t := l.peek()
	l.pos++
	return t
}

func (l *lexer) expect(t string) error {
	if got := l.next(); got != t {
		return fmt.Errorf("expected %q, got %q", t, got)
	}
	return nil
}

// env resolves names and values of one request.
type env struct {
	names  map[string]string
	values map[string]types.AttributeValue
	used   map[string]bool // placeholders used, to reject unused ones as DynamoDB does
}

func (e *env) path(tok string) (string, error) {
	if strings.HasPrefix(tok, "#") {
		n, ok := e.names[tok]
		if !ok {
			return "", fmt.Errorf("expression attribute name %s is not defined", tok)
		}
		e.used[tok] = true
		return n, nil
	}
	if tok == "" || strings.HasPrefix(tok, ":") || strings.ContainsAny(tok, "()=,") {
		return "", fmt.Errorf("expected an attribute path, got %q", tok)
	}
	return tok, nil
}

// operand returns the value of tok in it (ok false: an absent attribute).
func (e *env) operand(tok string, it item) (types.AttributeValue, bool, error) {
	if strings.HasPrefix(tok, ":") {
		v, ok := e.values[tok]
		if !ok {
			return nil, false, fmt.Errorf("expression attribute value %s is not defined", tok)
		}
		e.used[tok] = true
		return v, true, nil
	}
	p, err := e.path(tok)
	if err != nil {
		return nil, false, err
	}
	v, ok := it[p]
	return v, ok, nil
}

func (e *env) checkUnused() error {
	for k := range e.names {
		if !e.used[k] {
			return fmt.Errorf("value provided in ExpressionAttributeNames unused in expressions: keys: {%s}", k)
		}
	}
	for k := range e.values {
		if !e.used[k] {
			return fmt.Errorf("value provided in ExpressionAttributeValues unused in expressions: keys: {%s}", k)
		}
	}
	return nil
}

// evalCondition evaluates cond on it (nil: the item does not exist).
func (e *env) evalCondition(cond string, it item) (bool, error) {
	l, err := lex(cond)
	if err != nil {
		return false, err
	}
	v, err := e.or(l, it)
	if err != nil {
		return false, fmt.Errorf("condition %q: %w", cond, err)
	}
	if l.peek() != "" {
		return false, fmt.Errorf("condition %q: unexpected %q", cond, l.peek())
	}
	return v, nil
}

func (e *env) or(l *lexer, it item) (bool, error) {
	v, err := e.and(l, it)
	if err != nil {
		return false, err
	}
	for strings.EqualFold(l.peek(), "OR") {
		l.next()
		w, err := e.and(l, it)
		if err != nil {
			return false, err
		}
		v = v || w
	}
	return v, nil
}

func (e *env) and(l *lexer, it item) (bool, error) {
	v, err := e.unary(l, it)
	if err != nil {
		return false, err
	}
	for strings.EqualFold(l.peek(), "AND") {
		l.next()
		w, err := e.unary(l, it)
		if err != nil {
			return false, err
		}
		v = v && w
	}
	return v, nil
}

func (e *env) unary(l *lexer, it item) (bool, error) {
	t := l.next()
	switch {
	case strings.EqualFold(t, "NOT"):
		v, err := e.unary(l, it)
		return !v, err
	case t == "(":
		v, err := e.or(l, it)
		if err != nil {
			return false, err
		}
		return v, l.expect(")")
	case t == "attribute_exists" || t == "attribute_not_exists":
		if err := l.expect("("); err != nil {
			return false, err
		}
		p, err := e.path(l.next())
		if err != nil {
			return false, err
		}
		if err := l.expect(")"); err != nil {
			return false, err
		}
		_, ok := it[p]
		return ok == (t == "attribute_exists"), nil
	}
	left, lok, err := e.operand(t, it)
	if err != nil {
		return false, err
	}
	op := l.next()
	if op != "=" && op != "<>" {
		return false, fmt.Errorf("unsupported comparator %q", op)
	}
	right, rok, err := e.operand(l.next(), it)
	if err != nil {
		return false, err
	}
	eq := lok && rok && equal(left, right)
	if op == "=" {
		return eq, nil
	}
	return lok && rok && !eq, nil
}

// applyUpdate applies update to a copy of it (nil: a new item with key) and returns it.
func (e *env) applyUpdate(update string, it item) (item, error) {
	l, err := lex(update)
	if err != nil {
		return nil, err
	}
	out := item{}
	for k, v := range it {
		out[k] = v
	}
	if l.peek() == "" {
		return nil, fmt.Errorf("update %q: empty", update)
	}
	for l.peek() != "" {
		switch clause := strings.ToUpper(l.next()); clause {
		case "SET":
			for {
				p, err := e.path(l.next())
				if err != nil {
					return nil, fmt.Errorf("update %q: %w", update, err)
				}
				if err := l.expect("="); err != nil {
					return nil, fmt.Errorf("update %q: %w", update, err)
				}
				v, ok, err := e.operand(l.next(), it)
				if err != nil {
					return nil, fmt.Errorf("update %q: %w", update, err)
				}
				if !ok {
					return nil, fmt.Errorf("update %q: the provided expression refers to an attribute that does not exist in the item", update)
				}
				out[p] = v
				if l.peek() != "," {
					break
				}
				l.next()
			}
		case "REMOVE":
			for {
				p, err := e.path(l.next())
				if err != nil {
					return nil, fmt.Errorf("update %q: %w", update, err)
				}
				delete(out, p)
				if l.peek() != "," {
					break
				}
				l.next()
			}
		default:
			return nil, fmt.Errorf("update %q: unsupported clause %q", update, clause)
		}
	}
	return out, nil
}

// equal compares two scalar attribute values as DynamoDB does (same type and value; numbers
// by their decimal text, which is how the lease store writes them).
func equal(a, b types.AttributeValue) bool {
	switch x := a.(type) {
	case *types.AttributeValueMemberS:
		y, ok := b.(*types.AttributeValueMemberS)
		return ok && x.Value == y.Value
	case *types.AttributeValueMemberN:
		y, ok := b.(*types.AttributeValueMemberN)
		return ok && strings.TrimLeft(x.Value, "0") == strings.TrimLeft(y.Value, "0")
	case *types.AttributeValueMemberBOOL:
		y, ok := b.(*types.AttributeValueMemberBOOL)
		return ok && x.Value == y.Value
	}
	return false
}
