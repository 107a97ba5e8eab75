// Package config decodes recstream's config.yaml strictly: an unknown key, a value of the wrong
// type or a value a section's Validate rejects stops start-up with an error naming the key path
// ("worker.flush.max_age: must be > 0, got 0s"). Every key can be overridden from the
// environment: worker.flush.max_age ← RECSTREAM_WORKER_FLUSH_MAX_AGE. The environment is as
// strict as the file: a RECSTREAM_* variable that names no key (a typo in a task definition)
// is an error naming the variable, except the few that are not config keys (NonConfigEnv).
//
// YAML parsing is gopkg.in/yaml.v3's; this package only walks its node tree beside the target
// struct so that errors carry the full key path, which yaml.v3's own strict mode does not give.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every override variable.
const EnvPrefix = "RECSTREAM_"

// Validator is implemented by config sections. Validate returns an error whose message starts
// with the offending key relative to the section ("max_age: must be > 0, got 0s").
type Validator interface {
	Validate() error
}

// Error is a config error for one key path.
type Error struct {
	Path string // dotted key path, e.g. "worker.flush.max_age"
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// LoadFile decodes the YAML file at path over dst (a pointer to a struct already holding the
// defaults), applies environment overrides from env (os.Environ() form) and validates.
func LoadFile(path string, dst any, env []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &Error{Msg: fmt.Sprintf("read config: %v", err)}
	}
	return Load(bytes.NewReader(b), dst, env)
}

// Load is LoadFile for an already-open document.
func Load(r io.Reader, dst any, env []string) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return errors.New("config: dst must be a pointer to a struct")
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(r)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return &Error{Msg: fmt.Sprintf("parse config: %v", err)}
	}
	if len(doc.Content) > 0 {
		if err := decodeNode(doc.Content[0], rv.Elem(), ""); err != nil {
			return err
		}
	}
	if unknown := UnknownEnv(dst, env); len(unknown) > 0 {
		return unknownEnvError(rv.Elem().Type(), unknown)
	}
	if err := applyEnv(rv.Elem(), "", envMap(env)); err != nil {
		return err
	}
	return validate(rv.Elem(), "")
}

func envMap(env []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			m[k] = v
		}
	}
	return m
}

// NonConfigEnv are the RECSTREAM_* variables that are not config keys, so Load leaves them
// alone: each is read where it is named, by a test, a benchmark or a script (and one at run
// time). Secrets (RECSTREAM_MYSQL_PASSWORD, RECSTREAM_POSTGRES_PASSWORD) are config keys,
// read from the environment only.
var NonConfigEnv = map[string]string{
	"RECSTREAM_AWS_OPLOG":           "internal/awsenv: file to log every AWS operation to (make demo, for the IAM policy check)",
	"RECSTREAM_IAM_OPLOG":           "deploy tests: the operation log the IAM policy check reads (make test)",
	"RECSTREAM_LEASE_BENCH":         "worker lease benchmark switch",
	"RECSTREAM_LEASE_SIM":           "lease simulation grid (make bench-leases)",
	"RECSTREAM_LEASE_SIM_ROLLING":   "lease simulation: workers restarted one by one per cell",
	"RECSTREAM_LEASE_SIM_LEADER":    "lease simulation: 0 runs the per-worker Scans instead of leader-assigned leases",
	"RECSTREAM_LEASE_SIM_LOG":       "lease simulation: write the workers' logs (info) to this file",
	"RECSTREAM_WORKER_BENCH":        "worker end-to-end benchmarks switch",
	"RECSTREAM_E2E_EVENTS":          "worker end-to-end drain benchmark: events to drain (default 40,000)",
	"RECSTREAM_E2E_COMMIT_INTERVAL": "worker end-to-end drain benchmarks: the Iceberg table's commit_interval (default: the shipped one)",
	"RECSTREAM_FAULT_SEED":          "worker throttled-drain benchmark: the fault proxies' seed",
	"RECSTREAM_WORKER_TEST_CHILD":   "worker tests: the spec of a child worker process",
	"RECSTREAM_SIM_RSS_CHILD":       "worker peak-RSS simulation benchmark: the spec of its child worker process",
	"RECSTREAM_TEST_LOG":            "worker tests: log to stderr",
	"RECSTREAM_BENCH_1M":            "inference 1M-vector benchmark switch",
	"RECSTREAM_BENCH_1M_SCHEMA":     "inference 1M-vector benchmark: reuse a loaded schema",
	"RECSTREAM_BENCH_DATA":          "inference 1M-vector benchmark: data shape",
	"RECSTREAM_BENCH_MWM":           "inference 1M-vector benchmark: maintenance_work_mem",
	"RECSTREAM_BENCH_DB":            "batch etl benchmark: the seeded database",
	"RECSTREAM_BENCH_LOCATION":      "batch etl benchmark: output location",
	"RECSTREAM_STACK_DIR":           "scripts/stack.sh: state directory of the local stack",
	"RECSTREAM_STACK_DB_PASSWORD":   "scripts/stack.sh: the local databases' password",
	"RECSTREAM_DATA":                "scripts/bench_worker_rss.sh: the seed data",
}

// UnknownEnv returns, sorted, the RECSTREAM_* variables of env (os.Environ() form) that name no
// key of dst (a pointer to a config struct) and are not in NonConfigEnv.
func UnknownEnv(dst any, env []string) []string {
	t := reflect.TypeOf(dst)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	known := envKeys(t, "", map[string]string{})
	var out []string
	for name := range envMap(env) {
		if _, ok := known[name]; ok {
			continue
		}
		if _, ok := NonConfigEnv[name]; ok {
			continue
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// envKeys maps the override variable of every key of struct type t to its key path.
func envKeys(t reflect.Type, path string, out map[string]string) map[string]string {
	for _, f := range fields(t) {
		p := join(path, f.name)
		if ft := t.Field(f.index).Type; ft.Kind() == reflect.Struct {
			envKeys(ft, p, out)
			continue
		}
		out[EnvName(p)] = p
	}
	return out
}

// unknownEnvError names each unknown variable and, when one is a near miss, the key meant.
func unknownEnvError(t reflect.Type, unknown []string) error {
	known := envKeys(t, "", map[string]string{})
	msgs := make([]string, len(unknown))
	for i, name := range unknown {
		msgs[i] = "unknown environment variable " + name + ": no config key has that name"
		best, bestD := "", 3 // suggest only near misses: a dropped or doubled underscore, a typo
		for k := range known {
			if d := editDistance(name, k); d < bestD || d == bestD && k < best {
				best, bestD = k, d
			}
		}
		if best != "" {
			msgs[i] += fmt.Sprintf("; did you mean %s (%s)?", best, known[best])
		}
	}
	return &Error{Msg: strings.Join(msgs, "; ")}
}

// editDistance is the Levenshtein distance between a and b (bytes; variable names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// EnvName is the override variable for a dotted key path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(path))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

type field struct {
	name   string
	index  int
	secret bool
}

func fields(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{name: name, index: i, secret: f.Tag.Get("secret") == "true"})
	}
	return out
}

func isStruct(v reflect.Value) bool {
	// time.Duration etc. are not structs; yaml-unmarshalable structs would need care but none exist.
	return v.Kind() == reflect.Struct
}

func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if isStruct(v) {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil // "section:" with nothing under it keeps the defaults
		}
		if n.Kind != yaml.MappingNode {
			return &Error{Path: path, Msg: fmt.Sprintf("must be a mapping, got %q (line %d)", n.Value, n.Line)}
		}
		fs := fields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			if seen[k.Value] {
				return &Error{Path: p, Msg: fmt.Sprintf("duplicate key (line %d)", k.Line)}
			}
			seen[k.Value] = true
			var f *field
			for j := range fs {
				if fs[j].name == k.Value {
					f = &fs[j]
				}
			}
			if f == nil {
				return &Error{Path: p, Msg: fmt.Sprintf("unknown key (line %d); known keys: %s", k.Line, knownKeys(fs))}
			}
			if f.secret && val.Value != "" {
				return &Error{Path: p, Msg: fmt.Sprintf("secrets are not read from the config file; set %s", EnvName(p))}
			}
			if err := decodeNode(val, v.Field(f.index), p); err != nil {
				return err
			}
		}
		return nil
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		shown := n.Value
		if n.Kind != yaml.ScalarNode {
			shown = "<" + kindName(n.Kind) + ">"
		}
		return &Error{Path: path, Msg: fmt.Sprintf("invalid value %q (line %d): want %s", shown, n.Line, typeName(v.Type()))}
	}
	return nil
}

func knownKeys(fs []field) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	default:
		return "value"
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t.String() == "time.Duration":
		return "a duration like 500ms, 10s or 5m"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "a non-negative integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	}
	return t.String()
}

// applyEnv overlays RECSTREAM_* variables. Values are parsed as YAML scalars so that an override
// accepts exactly what the file accepts.
func applyEnv(v reflect.Value, path string, env map[string]string) error {
	for _, f := range fields(v.Type()) {
		p := join(path, f.name)
		fv := v.Field(f.index)
		if isStruct(fv) {
			if err := applyEnv(fv, p, env); err != nil {
				return err
			}
			continue
		}
		raw, ok := env[EnvName(p)]
		if !ok {
			continue
		}
		if fv.Kind() == reflect.String {
			fv.SetString(raw) // verbatim: a DSN or password may contain YAML syntax
			continue
		}
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(raw), &n); err != nil || len(n.Content) == 0 {
			return &Error{Path: p, Msg: fmt.Sprintf("invalid value %q from %s: want %s", redact(f, raw), EnvName(p), typeName(fv.Type()))}
		}
		if err := n.Content[0].Decode(fv.Addr().Interface()); err != nil {
			return &Error{Path: p, Msg: fmt.Sprintf("invalid value %q from %s: want %s", redact(f, raw), EnvName(p), typeName(fv.Type()))}
		}
	}
	return nil
}

func redact(f field, s string) string {
	if f.secret {
		return "<redacted>"
	}
	return s
}

// validate calls Validate on every section, innermost first, and prefixes the path.
func validate(v reflect.Value, path string) error {
	for _, f := range fields(v.Type()) {
		fv := v.Field(f.index)
		if isStruct(fv) {
			if err := validate(fv, join(path, f.name)); err != nil {
				return err
			}
		}
	}
	if val, ok := v.Addr().Interface().(Validator); ok {
		if err := val.Validate(); err != nil {
			var ce *Error
			if errors.As(err, &ce) {
				return &Error{Path: join(path, ce.Path), Msg: ce.Msg}
			}
			msg := err.Error()
			// "max_age: must be > 0" from section worker.flush becomes path worker.flush.max_age.
			if k, rest, ok := strings.Cut(msg, ": "); ok && k != "" && !strings.ContainsAny(k, " \t") {
				return &Error{Path: join(path, k), Msg: rest}
			}
			return &Error{Path: path, Msg: msg}
		}
	}
	return nil
}
