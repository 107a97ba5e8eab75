package deploy_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"gopkg.in/yaml.v3"
)

// The Prometheus alerting rules for the worker and their promtool unit tests, relative to the
// repository root, and the runbook their `runbook` annotations point into.
const (
	alertsFile     = "deploy/prometheus/alerts.yaml"
	alertsTestFile = "deploy/prometheus/alerts_test.yaml"
	runbookFile    = "docs/runbook.md"
	alertsGroup    = "recstream-worker"
)

// severities are the values an alert's severity label may take (see the header of alerts.yaml).
var severities = map[string]bool{"critical": true, "warning": true}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string           `yaml:"eval_time"`
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// promtool returns the promtool binary. When it is missing the test fails under CI=true (as a
// missing local-stack service does, see internal/stacktest) and is skipped otherwise.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	why := "promtool is not installed (" + err.Error() + ")"
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; under CI=true a missing tool is a failure: `scripts/stack.sh up` installs it (Debian package prometheus)", why)
	}
	t.Skipf("%s; `scripts/stack.sh up` installs it (Debian package prometheus), or run `make test`", why)
	return ""
}

// runPromtool runs promtool from the repository root and fails the test with its output.
func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestAlertRulesPromtoolCheck: alerts.yaml is a valid Prometheus rule file (syntax, PromQL,
// templates).
func TestAlertRulesPromtoolCheck(t *testing.T) {
	out := runPromtool(t, "check", "rules", alertsFile)
	t.Logf("%s", out)
}

// TestAlertRulesPromtoolTest: every case of alerts_test.yaml passes (an alert fires exactly when
// and with the labels and annotations it expects).
func TestAlertRulesPromtoolTest(t *testing.T) {
	out := runPromtool(t, "test", "rules", alertsTestFile)
	t.Logf("%s", out)
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, alertsFile))
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return f
}

// alertNames returns the alerts of alerts.yaml in file order.
func alertNames(t *testing.T, f ruleFile) []string {
	t.Helper()
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s defines no alerts", alertsFile)
	}
	return names
}

// TestAlertRunbookAnchors: every alert is in group recstream-worker, has a severity label, a
// summary and a description, and a runbook annotation docs/runbook.md#<name in lower case>
// whose anchor is a heading of docs/runbook.md.
func TestAlertRunbookAnchors(t *testing.T) {
	f := readRules(t)
	anchors := markdownAnchors(t, filepath.Join(repoRoot, runbookFile))
	seen := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name != alertsGroup {
			t.Errorf("%s: group %q, want every alert in group %q", alertsFile, g.Name, alertsGroup)
		}
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("%s: alert %s is defined twice", alertsFile, r.Alert)
			}
			seen[r.Alert] = true
			if !severities[r.Labels["severity"]] {
				t.Errorf("%s: alert %s: severity label %q, want one of critical, warning", alertsFile, r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: alert %s has no %s annotation", alertsFile, r.Alert, a)
				}
			}
			want := runbookFile + "#" + strings.ToLower(r.Alert)
			got := r.Annotations["runbook"]
			if got != want {
				t.Errorf("%s: alert %s: runbook annotation %q, want %q", alertsFile, r.Alert, got, want)
			}
			if _, anchor, ok := strings.Cut(got, "#"); ok && !anchors[anchor] {
				t.Errorf("%s: alert %s: %s has no heading with anchor #%s (add a heading \"%s\" under \"Alerts\")",
					alertsFile, r.Alert, runbookFile, anchor, r.Alert)
			}
		}
	}
}

// TestAlertsAllUnitTested: every alert of alerts.yaml has at least one promtool case where it
// fires and one where it must not, and alerts_test.yaml tests no alert that does not exist (for
// which promtool would pass any expectation of silence).
func TestAlertsAllUnitTested(t *testing.T) {
	names := alertNames(t, readRules(t))
	b, err := os.ReadFile(filepath.Join(repoRoot, alertsTestFile))
	if err != nil {
		t.Fatal(err)
	}
	var tf ruleTestFile
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatalf("%s: %v", alertsTestFile, err)
	}
	if len(tf.RuleFiles) != 1 || tf.RuleFiles[0] != filepath.Base(alertsFile) {
		t.Errorf("%s: rule_files %v, want [%s]", alertsTestFile, tf.RuleFiles, filepath.Base(alertsFile))
	}
	defined := map[string]bool{}
	for _, n := range names {
		defined[n] = true
	}
	fires, silent := map[string]int{}, map[string]int{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if !defined[a.Alertname] {
				t.Errorf("%s: test %q checks alert %q, which %s does not define", alertsTestFile, tc.Name, a.Alertname, alertsFile)
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname]++
			} else {
				silent[a.Alertname]++
			}
		}
	}
	for _, n := range names {
		if fires[n] == 0 {
			t.Errorf("%s: no case where %s fires (an alert_rule_test with exp_alerts)", alertsTestFile, n)
		}
		if silent[n] == 0 {
			t.Errorf("%s: no case where %s must not fire (an alert_rule_test with exp_alerts: [])", alertsTestFile, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		t.Logf("%-32s fires in %d case(s), silent in %d", n, fires[n], silent[n])
	}
}

// markdownAnchors returns the anchors GitHub gives the headings of a Markdown file: the heading
// text in lower case, without punctuation other than '-' and '_', spaces turned into '-', and
// "-1", "-2", ... appended to repeats. Lines inside fenced code blocks are not headings.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	anchors, count := map[string]bool{}, map[string]int{}
	fence := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := githubSlug(m[1])
		if n := count[slug]; n > 0 {
			anchors[slug+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[slug] = true
		}
		count[slug]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return anchors
}

func githubSlug(text string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			sb.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			sb.WriteRune(r)
		}
	}
	return sb.String()
}
