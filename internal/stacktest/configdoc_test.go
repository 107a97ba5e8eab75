package stacktest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the generated key table of docs/configuration.md from config.yaml")

const (
	keysBegin = "<!-- BEGIN keys: generated from config.yaml's comments by TestConfigurationDocMatchesConfigYAML; do not edit, run: go test ./internal/stacktest -run TestConfigurationDoc -update-docs -->"
	keysEnd   = "<!-- END keys -->"
)

// docs/configuration.md lists every key of config.yaml with its default and comment. The
// table is generated from config.yaml (the one place a key is documented), and this test
// fails when the two drift: a key added, removed, renamed, or its default or comment changed.
func TestConfigurationDocMatchesConfigYAML(t *testing.T) {
	root := RepoRoot()
	src, err := os.ReadFile(filepath.Join(root, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	table, n, err := keyTable(src)
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if n < 50 {
		t.Fatalf("only %d keys rendered from config.yaml: the walk is wrong", n)
	}
	docPath := filepath.Join(root, "docs", "configuration.md")
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := bytes.Cut(doc, []byte(keysBegin))
	if !ok {
		t.Fatalf("docs/configuration.md: marker %q missing", keysBegin)
	}
	current, after, ok := bytes.Cut(rest, []byte(keysEnd))
	if !ok {
		t.Fatalf("docs/configuration.md: marker %q missing", keysEnd)
	}
	want := "\n" + table + "\n"
	if string(current) == want {
		return
	}
	if *updateDocs {
		out := bytes.Join([][]byte{before, []byte(keysBegin), []byte(want), []byte(keysEnd), after}, nil)
		if err := os.WriteFile(docPath, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("docs/configuration.md: key table rewritten (%d keys)", n)
		return
	}
	t.Fatalf("docs/configuration.md's key table differs from config.yaml (%d keys); regenerate it with\n"+
		"  go test ./internal/stacktest -run TestConfigurationDoc -update-docs\nfirst differing line: %s",
		n, firstDiff(string(current), want))
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d\n  doc:         %s\n  config.yaml: %s", i+1, x, y)
		}
	}
	return "(none)"
}

// keyTable renders every key of a config.yaml document as a Markdown table row: its dotted
// path, its default and its comments (the lines above it, then the one beside it).
func keyTable(src []byte) (string, int, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return "", 0, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return "", 0, fmt.Errorf("want a mapping at the top")
	}
	var b strings.Builder
	b.WriteString("| key | default | what it does |\n|---|---|---|\n")
	n := 0
	var walk func(prefix string, m *yaml.Node) error
	walk = func(prefix string, m *yaml.Node) error {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			var comments []string
			if prefix != "" || i > 0 { // the first key's head comment is the file's header
				comments = append(comments, commentText(k.HeadComment))
			}
			comments = append(comments, commentText(k.LineComment), commentText(v.LineComment))
			what := strings.Join(nonEmpty(comments), " ")
			n++
			switch v.Kind {
			case yaml.MappingNode:
				fmt.Fprintf(&b, "| **`%s`** | | %s |\n", path, cell(what))
				if err := walk(path, v); err != nil {
					return err
				}
			case yaml.ScalarNode:
				def := v.Value
				if v.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 || def == "" {
					def = fmt.Sprintf("%q", def)
				}
				fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", path, cell(def), cell(what))
			default:
				return fmt.Errorf("%s (line %d): only mappings and scalars are documented", path, k.Line)
			}
		}
		return nil
	}
	if err := walk("", doc.Content[0]); err != nil {
		return "", 0, err
	}
	return strings.TrimSuffix(b.String(), "\n"), n, nil
}

func commentText(c string) string {
	var lines []string
	for _, l := range strings.Split(c, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " ")
}

func nonEmpty(s []string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

// cell escapes what would end a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
