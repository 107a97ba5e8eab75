// Package deploy reads and checks recstream's deployment files: the ECS task definitions,
// service and EventBridge Scheduler schedules in deploy/ecs, the IAM policies in deploy/iam and
// the host crontab in deploy/cron. The files are the product; this package only decodes them
// strictly (unknown fields are errors) so the tests in this directory and in cmd/recstream can
// check them against the binary, config.yaml and the AWS operations the code really calls.
//
// Deployment files carry ${Name} placeholders for account-specific values (see Placeholders);
// an operator replaces them (envsubst, sed, or a CloudFormation Fn::Sub) before registering.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
)

// Placeholders lists every ${Name} a deployment file may contain, each with an example value
// that makes the file valid for tests. A placeholder not listed here is an error.
var Placeholders = map[string]string{
	"AccountId":     "123456789012",
	"Region":        "us-east-1",
	"ImageTag":      "v1.0.0",
	"ClusterName":   "recstream",
	"SubnetA":       "subnet-0a1b2c3d4e5f60001",
	"SubnetB":       "subnet-0a1b2c3d4e5f60002",
	"SecurityGroup": "sg-0a1b2c3d4e5f60003",
	"PostgresHost":  "recstream.cluster-c0abcdefghij.us-east-1.rds.amazonaws.com",
	"MySQLHost":     "classicmodels.c0abcdefghij.us-east-1.rds.amazonaws.com",
}

var placeholderRE = regexp.MustCompile(`\$\{([A-Za-z0-9_]*)\}`)

// PlaceholdersIn returns the distinct placeholder names used in s, sorted.
func PlaceholdersIn(s string) []string {
	seen := map[string]bool{}
	for _, m := range placeholderRE.FindAllStringSubmatch(s, -1) {
		seen[m[1]] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Substitute replaces each ${Name} in s with vars[Name]. It returns an error naming the first
// placeholder that vars lacks.
func Substitute(s string, vars map[string]string) (string, error) {
	var missing string
	out := placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := vars[name]
		if !ok && missing == "" {
			missing = name
		}
		return v
	})
	if missing != "" {
		return "", fmt.Errorf("placeholder ${%s}: no value", missing)
	}
	return out, nil
}

// decodeStrict decodes one JSON value from b into dst, rejecting unknown fields and trailing
// data. Errors name the file and, for syntax errors, the line.
func decodeStrict(path string, b []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("%s:%d: %w", path, lineOf(b, se.Offset), err)
		case errors.As(err, &te):
			return fmt.Errorf("%s:%d: field %s: %w", path, lineOf(b, te.Offset), te.Field, err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if dec.More() {
		return fmt.Errorf("%s: trailing data after the JSON value", path)
	}
	return nil
}

func lineOf(b []byte, off int64) int {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	return bytes.Count(b[:off], []byte("\n")) + 1
}

// readSubstituted reads path and replaces placeholders with vars (nil: leave them).
func readSubstituted(path string, vars map[string]string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if vars == nil {
		return b, nil
	}
	s, err := Substitute(string(b), vars)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return []byte(s), nil
}

// LoadTaskDefinition decodes an ECS task definition file (the JSON that
// `aws ecs register-task-definition --cli-input-json` takes) into the SDK's input type,
// rejecting unknown fields. Placeholders are replaced with vars first (nil: kept verbatim).
func LoadTaskDefinition(path string, vars map[string]string) (*ecs.RegisterTaskDefinitionInput, error) {
	b, err := readSubstituted(path, vars)
	if err != nil {
		return nil, err
	}
	var in ecs.RegisterTaskDefinitionInput
	if err := decodeStrict(path, b, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// LoadService decodes an ECS service file (`aws ecs create-service --cli-input-json`).
func LoadService(path string, vars map[string]string) (*ecs.CreateServiceInput, error) {
	b, err := readSubstituted(path, vars)
	if err != nil {
		return nil, err
	}
	var in ecs.CreateServiceInput
	if err := decodeStrict(path, b, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// LoadSchedule decodes an EventBridge Scheduler file (`aws scheduler create-schedule
// --cli-input-json`) and parses its schedule expression.
func LoadSchedule(path string, vars map[string]string) (*scheduler.CreateScheduleInput, Expression, error) {
	b, err := readSubstituted(path, vars)
	if err != nil {
		return nil, Expression{}, err
	}
	var in scheduler.CreateScheduleInput
	if err := decodeStrict(path, b, &in); err != nil {
		return nil, Expression{}, err
	}
	if in.ScheduleExpression == nil {
		return nil, Expression{}, fmt.Errorf("%s: ScheduleExpression: missing", path)
	}
	e, err := ParseExpression(*in.ScheduleExpression)
	if err != nil {
		return nil, Expression{}, fmt.Errorf("%s: ScheduleExpression: %w", path, err)
	}
	return &in, e, nil
}

// Files returns the files in dir whose names match pattern (filepath.Match), sorted. No match
// is an error, so a renamed directory cannot make a test check nothing.
func Files(dir, pattern string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return nil, fmt.Errorf("glob %s/%s: %w", dir, pattern, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no files match %s/%s", dir, pattern)
	}
	sort.Strings(m)
	return m, nil
}

// EnvMap turns a container's environment and secrets into os.Environ() form for a check run:
// environment values verbatim, secrets as a fixed non-empty stand-in (their values live in
// Secrets Manager / SSM and never in a file).
func EnvMap(names, values []string, secrets []string) []string {
	out := make([]string, 0, len(names)+len(secrets))
	for i := range names {
		out = append(out, names[i]+"="+values[i])
	}
	for _, s := range secrets {
		out = append(out, s+"=stand-in-secret")
	}
	return out
}
