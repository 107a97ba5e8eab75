package stacktest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNoTrackedFileNamesOutsideData guards the promise that a fresh clone is self-contained:
// no tracked file may point at a data folder beside the checkout, since a user's clone has none.
// The patterns are assembled so that this file does not match itself.
func TestNoTrackedFileNamesOutsideData(t *testing.T) {
	root := RepoRoot()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v (the guard needs a git checkout)", err)
	}
	bad := regexp.MustCompile(regexp.QuoteMeta("../"+"shared") + "|" + regexp.QuoteMeta("shared"+"/data"))
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	if len(files) < 50 {
		t.Fatalf("git ls-files listed %d files; expected the whole repository", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the work tree, not yet committed
			}
			t.Fatal(err)
		}
		if loc := bad.FindIndex(b); loc != nil {
			line := 1 + strings.Count(string(b[:loc[0]]), "\n")
			t.Errorf("%s:%d names a data folder outside the repository (%q); use testdata/", f, line, b[loc[0]:loc[1]])
		}
	}
}

// TestTestdataChecksums: every file testdata/README.md lists has the SHA-256 it states, and
// every data file under testdata/ is listed, so the provenance table cannot drift.
func TestTestdataChecksums(t *testing.T) {
	root := filepath.Join(RepoRoot(), "testdata")
	f, err := os.Open(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([a-z]+/[A-Za-z0-9_.-]+)` \\|.*\\| `([0-9a-f]{64})` \\|")
	listed := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			listed[m[1]] = m[2]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"classicmodels", "lab"} {
		entries, err := os.ReadDir(filepath.Join(root, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if _, ok := listed[sub+"/"+e.Name()]; !ok {
				t.Errorf("testdata/%s/%s is not listed in testdata/README.md", sub, e.Name())
			}
		}
	}
	if len(listed) != 12 {
		t.Errorf("testdata/README.md lists %d files, want 12 (9 classicmodels + 3 lab)", len(listed))
	}
	for name, want := range listed {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Errorf("testdata/%s: %v", name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("testdata/%s: sha256 %s, README states %s", name, got, want)
		}
	}
}
