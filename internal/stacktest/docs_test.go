package stacktest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every relative link of README.md and docs/ resolves to a file of the repository.
func TestDocLinksResolve(t *testing.T) {
	root := RepoRoot()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"))
	link := regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, _, _ := strings.Cut(target, "#")
			if path == "" {
				continue
			}
			checked++
			if _, err := os.Stat(filepath.Join(filepath.Dir(f), path)); err != nil {
				rel, _ := filepath.Rel(root, f)
				t.Errorf("%s: link %s does not resolve", rel, target)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d relative links checked: the link pattern or the file list is wrong", checked)
	}
}

// The README stays a newcomer's page: the reference lives in docs/.
func TestReadmeIsShort(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > 250 {
		t.Fatalf("README.md has %d lines, want at most 250 (move reference text to docs/)", n)
	}
}
