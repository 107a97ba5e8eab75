package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Policy is an IAM policy document as deploy/iam stores it.
type Policy struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM policy statement. Action, Resource and Principal accept a string or a
// list, as IAM does.
type Statement struct {
	Sid       string                           `json:"Sid"`
	Effect    string                           `json:"Effect"`
	Principal map[string]StringList            `json:"Principal,omitempty"`
	Action    StringList                       `json:"Action"`
	Resource  StringList                       `json:"Resource,omitempty"`
	Condition map[string]map[string]StringList `json:"Condition,omitempty"`
}

// StringList is a JSON string or array of strings.
type StringList []string

// UnmarshalJSON accepts "x" or ["x", "y"].
func (l *StringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings: %w", err)
	}
	*l = many
	return nil
}

// LoadPolicy decodes an IAM policy file strictly: unknown fields, a Version other than
// 2012-10-17, an Effect other than Allow/Deny or a statement without actions are errors.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Policy
	if err := decodeStrict(path, b, &p); err != nil {
		return nil, err
	}
	if p.Version != "2012-10-17" {
		return nil, fmt.Errorf("%s: Version: want 2012-10-17, got %q", path, p.Version)
	}
	if len(p.Statement) == 0 {
		return nil, fmt.Errorf("%s: Statement: empty", path)
	}
	for i, s := range p.Statement {
		if s.Effect != "Allow" && s.Effect != "Deny" {
			return nil, fmt.Errorf("%s: Statement[%d] (%s): Effect: want Allow or Deny, got %q", path, i, s.Sid, s.Effect)
		}
		if len(s.Action) == 0 {
			return nil, fmt.Errorf("%s: Statement[%d] (%s): Action: empty", path, i, s.Sid)
		}
	}
	return &p, nil
}

// WarehouseClass marks S3 actions on the Iceberg warehouse's objects: "s3:PutObject@warehouse"
// is s3:PutObject granted on (or called for) keys under WarehousePrefix of the recommendations
// bucket, apart from the same action on year=/errors/. The operation log marks them so
// (internal/awsenv SetOpLogS3Class), so the check holds the Iceberg output's calls to grants
// scoped to the warehouse.
const WarehouseClass = "warehouse"

// WarehousePrefix is the warehouse's key prefix in the recommendations bucket in production
// (config.yaml: worker.output.iceberg.warehouse empty, so the warehouse is <recommendations>/warehouse).
const WarehousePrefix = "warehouse/"

// S3Class returns the class of an S3 statement's objects: WarehouseClass when every resource
// key (for s3:ListBucket, every s3:prefix condition) is under WarehousePrefix, "" when none
// is; mixed is true when some are and some are not (a statement must be one or the other).
func (s Statement) S3Class() (class string, mixed bool) {
	var keys []string
	for _, r := range s.Resource {
		if rest, ok := strings.CutPrefix(r, "arn:aws:s3:::"); ok {
			if _, key, ok := strings.Cut(rest, "/"); ok {
				keys = append(keys, key)
			}
		}
	}
	keys = append(keys, s.Condition["StringLike"]["s3:prefix"]...)
	in := 0
	for _, k := range keys {
		if strings.HasPrefix(k, WarehousePrefix) {
			in++
		}
	}
	switch {
	case in == 0:
		return "", false
	case in == len(keys):
		return WarehouseClass, false
	}
	return "", true
}

// AllowedActions returns the set of actions the policy's Allow statements grant, S3 actions of
// warehouse statements marked "@warehouse" (see WarehouseClass).
func (p *Policy) AllowedActions() map[string]bool {
	out := map[string]bool{}
	for _, s := range p.Statement {
		if s.Effect == "Allow" {
			class, _ := s.S3Class()
			for _, a := range s.Action {
				if class != "" && strings.HasPrefix(a, "s3:") {
					a += "@" + class
				}
				out[a] = true
			}
		}
	}
	return out
}

// servicePrefix maps the SDK's ServiceID (as internal/awsenv records it) to the IAM prefix.
var servicePrefix = map[string]string{
	"Kinesis":    "kinesis",
	"DynamoDB":   "dynamodb",
	"S3":         "s3",
	"CloudWatch": "cloudwatch",
	"STS":        "sts",
}

// s3Actions holds the S3 operations whose IAM action is not "s3:" + the operation name.
var s3Actions = map[string][]string{
	"ListObjectsV2":           {"s3:ListBucket"},
	"ListObjects":             {"s3:ListBucket"},
	"HeadBucket":              {"s3:ListBucket"},
	"HeadObject":              {"s3:GetObject"},
	"GetObject":               {"s3:GetObject"},
	"PutObject":               {"s3:PutObject"},
	"CopyObject":              {"s3:GetObject", "s3:PutObject"},
	"DeleteObject":            {"s3:DeleteObject"},
	"DeleteObjects":           {"s3:DeleteObject"},
	"CreateMultipartUpload":   {"s3:PutObject"},
	"UploadPart":              {"s3:PutObject"},
	"CompleteMultipartUpload": {"s3:PutObject"},
	"AbortMultipartUpload":    {"s3:AbortMultipartUpload"},
	"ListMultipartUploads":    {"s3:ListBucketMultipartUploads"},
	"ListParts":               {"s3:ListMultipartUploadParts"},
	"CreateBucket":            {"s3:CreateBucket"},
	"GetBucketLocation":       {"s3:GetBucketLocation"},
}

// ActionsFor maps one recorded operation ("S3:ListObjectsV2") to the IAM actions it needs
// (s3:ListBucket). Kinesis, DynamoDB, CloudWatch and STS actions are the operation names; S3's
// differ and are listed explicitly, so an S3 operation missing from the list is an error rather
// than a guess.
func ActionsFor(op string) ([]string, error) {
	op, class, classed := strings.Cut(op, "@")
	if classed {
		if class != WarehouseClass || !strings.HasPrefix(op, "S3:") {
			return nil, fmt.Errorf("operation %q: only S3 operations have a class, and only %q", op+"@"+class, WarehouseClass)
		}
		a, err := ActionsFor(op)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(a))
		for i := range a {
			out[i] = a[i] + "@" + class
		}
		return out, nil
	}
	svc, name, ok := strings.Cut(op, ":")
	if !ok || svc == "" || name == "" {
		return nil, fmt.Errorf("operation %q: want Service:Operation", op)
	}
	prefix, ok := servicePrefix[svc]
	if !ok {
		return nil, fmt.Errorf("operation %q: service %q has no IAM mapping in deploy.ActionsFor", op, svc)
	}
	if prefix == "s3" {
		a, ok := s3Actions[name]
		if !ok {
			return nil, fmt.Errorf("operation %q: no IAM mapping in deploy.ActionsFor (look it up in the S3 actions table)", op)
		}
		return a, nil
	}
	return []string{prefix + ":" + name}, nil
}

// OpLogEntry is one line of the RECSTREAM_AWS_OPLOG file: the caller (the subcommand, or a test
// binary's name) and the operation.
type OpLogEntry struct {
	Caller string // "worker", "batch etl"
	Op     string // "Kinesis:GetRecords"
	Line   int
}

// ReadOpLog reads the operation log internal/awsenv writes ("<caller>\t<Service>:<Operation>"
// per line). A malformed line is an error naming its line number.
func ReadOpLog(path string) ([]OpLogEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []OpLogEntry
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		caller, op, ok := strings.Cut(line, "\t")
		if !ok || !strings.Contains(op, ":") {
			return nil, fmt.Errorf("%s:%d: want \"<caller>\\t<Service>:<Operation>\", got %q", path, n, line)
		}
		out = append(out, OpLogEntry{Caller: caller, Op: op, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// SortedKeys returns m's keys in order (for stable messages).
func SortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Roles says which policy each recstream subcommand runs under, for ComparePolicies.
type Roles struct {
	// Callers maps a policy file name to the subcommands that run under it.
	Callers map[string][]string
	// NotDeployed lists subcommands that never run in production, with the reason; their
	// operations are ignored.
	NotDeployed map[string]string
	// Conditional lists, per policy, actions it may grant without a recorded call because the
	// code calls them only when a resource is missing; each with its reason.
	Conditional map[string]map[string]string
	// Silent lists subcommands that call no AWS API (they need not appear in the log).
	Silent map[string]bool
}

// ComparePolicies checks recorded operations against the policies: a role's policy must allow
// every action its subcommands called and nothing else (except Conditional actions). problems
// are failures, each naming the policy, the action and the calls; notes are informational
// (ignored test-binary callers, conditional grants). A caller in no role and not NotDeployed is
// a problem, as is a deployed subcommand with no recorded operation.
func ComparePolicies(entries []OpLogEntry, r Roles, policies map[string]*Policy) (problems, notes []string) {
	// A caller may run under several policies (a command with the Iceberg output has its own
	// policy and the Iceberg one): it needs each action from one of them, and each policy's
	// grants must be called by one of its callers.
	rolesOf := map[string][]string{}
	for _, role := range SortedKeys(r.Callers) {
		for _, c := range r.Callers[role] {
			rolesOf[c] = append(rolesOf[c], role)
		}
	}
	called := map[string]map[string][]string{} // caller → action → "caller op"
	seen := map[string]bool{}
	for _, e := range entries {
		_, ok := rolesOf[e.Caller]
		switch {
		case ok:
		case r.NotDeployed[e.Caller] != "":
			continue
		case strings.HasSuffix(e.Caller, ".test"):
			notes = append(notes, fmt.Sprintf("line %d: ignored test binary %q (%s): tests set up fixtures no deployed role does", e.Line, e.Caller, e.Op))
			continue
		default:
			problems = append(problems, fmt.Sprintf("line %d: caller %q (%s) belongs to no role: assign it a policy or mark it not deployed", e.Line, e.Caller, e.Op))
			continue
		}
		seen[e.Caller] = true
		actions, err := ActionsFor(e.Op)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v", e.Line, err))
			continue
		}
		if called[e.Caller] == nil {
			called[e.Caller] = map[string][]string{}
		}
		for _, a := range actions {
			v := e.Caller + " " + e.Op
			if !containsString(called[e.Caller][a], v) {
				called[e.Caller][a] = append(called[e.Caller][a], v)
			}
		}
	}
	for _, c := range SortedKeys(rolesOf) {
		if !seen[c] && !r.Silent[c] {
			problems = append(problems, fmt.Sprintf("no AWS operation recorded for %q (%s): run every deployed subcommand with %s set", c, strings.Join(rolesOf[c], " + "), "RECSTREAM_AWS_OPLOG"))
		}
		granted := map[string]bool{}
		for _, role := range rolesOf[c] {
			if p := policies[role]; p != nil {
				for a := range p.AllowedActions() {
					granted[a] = true
				}
			}
		}
		for _, a := range SortedKeys(called[c]) {
			if !granted[a] {
				problems = append(problems, fmt.Sprintf("%s lacks %s, which the code called (%s)", strings.Join(rolesOf[c], " + "), a, strings.Join(called[c][a], ", ")))
			}
		}
	}
	for _, role := range SortedKeys(r.Callers) {
		p := policies[role]
		if p == nil {
			problems = append(problems, fmt.Sprintf("%s: no such policy", role))
			continue
		}
		used := map[string]bool{}
		for _, c := range r.Callers[role] {
			for a := range called[c] {
				used[a] = true
			}
		}
		for _, a := range SortedKeys(p.AllowedActions()) {
			if used[a] {
				continue
			}
			if why := r.Conditional[role][a]; why != "" {
				notes = append(notes, fmt.Sprintf("%s grants %s without a recorded call: %s", role, a, why))
				continue
			}
			problems = append(problems, fmt.Sprintf("%s grants %s, which none of %v called: remove it (least privilege)", role, a, r.Callers[role]))
		}
	}
	return problems, notes
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
