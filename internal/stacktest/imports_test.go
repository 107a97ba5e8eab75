package stacktest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/recstream/recstream/"

// ownImports is the README's code map as rules: for each package, the packages of this module
// it may import. A package missing here fails the test, so a new package gets a line in the
// code map; test-support packages (their names end in "test", and the stack, fault and
// simulation helpers) may import anything.
var ownImports = map[string][]string{
	"cmd/recstream":               {"*"},
	"worker":                      {"checkpoint", "internal/awsenv", "internal/icetable", "internal/objstore"},
	"checkpoint":                  {},
	"checkpoint/leasestatus":      {"checkpoint", "internal/awsenv"},
	"inference":                   {"internal/artifacts", "internal/objstore", "internal/pg"},
	"inference/train":             {"inference", "batch/dataset", "internal/artifacts", "internal/csvio", "internal/objstore"},
	"batch":                       {"batch/etl", "batch/seed"},
	"batch/seed":                  {"batch/dataset", "sql/mysql", "internal/csvio", "internal/mysqldb"},
	"batch/etl":                   {"batch/dataset", "internal/mysqldb", "internal/objstore"},
	"batch/embeddings":            {"internal/artifacts", "internal/objstore", "internal/pg"},
	"batch/dataset":               {"internal/objstore"},
	"internal/icetable":           {},
	"internal/icetable/icespec":   {},
	"internal/objstore":           {},
	"internal/artifacts":          {"internal/objstore"},
	"internal/pg":                 {},
	"internal/mysqldb":            {},
	"internal/awsenv":             {},
	"internal/config":             {},
	"internal/logging":            {},
	"internal/httpserve":          {},
	"internal/csvio":              {},
	"sql":                         {},
	"sql/mysql":                   {},
	"produce":                     {},
	"deploy":                      {},
	"deploy/healthcheck":          {},
	"internal/stacktest":          {"*"},
	"internal/pgtest":             {"*"},
	"internal/faults":             {"*"},
	"internal/leasesim":           {"*"},
	"inference/internal/towerref": {"*"},
}

func TestImportsFollowTheCodeMap(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		pkgs++
		allow, ok := ownImports[pkg]
		if !ok {
			if strings.HasSuffix(pkg, "test") {
				continue
			}
			t.Errorf("package %s is not in the code map (README.md and ownImports here)", pkg)
			continue
		}
		if len(allow) == 1 && allow[0] == "*" {
			continue
		}
		for _, imp := range fields[1:] {
			own, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if !slices.Contains(allow, own) {
				t.Errorf("%s imports %s, which the code map does not allow (README.md \"Code map\")", pkg, own)
			}
		}
	}
	if pkgs < 20 {
		t.Fatalf("only %d packages listed", pkgs)
	}
}
