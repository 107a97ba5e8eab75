package deploy_test

import (
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/recstream/recstream/deploy"
)

const repoRoot = ".."

// dockerfile reads ../Dockerfile.
func dockerfile(t *testing.T) []deploy.Instruction {
	t.Helper()
	ins, err := deploy.ReadDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return ins
}

func instructions(ins []deploy.Instruction, cmd string, stage int) []deploy.Instruction {
	var out []deploy.Instruction
	for _, in := range ins {
		if in.Cmd == cmd && (stage < 0 || in.Stage == stage) {
			out = append(out, in)
		}
	}
	return out
}

func lastStage(ins []deploy.Instruction) int { return ins[len(ins)-1].Stage }

// goModVersion returns go.mod's toolchain version (the toolchain directive, else go).
func goModVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goV := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(b)
	if goV == nil {
		t.Fatal("go.mod: no go directive")
	}
	if tc := regexp.MustCompile(`(?m)^toolchain go(\S+)$`).FindSubmatch(b); tc != nil {
		return string(tc[1])
	}
	return string(goV[1])
}

func TestDockerfileShape(t *testing.T) {
	ins := dockerfile(t)
	froms := instructions(ins, "FROM", -1)
	if len(froms) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build (>= 2 FROM), got %d", len(froms))
	}
	final := lastStage(ins)

	// The build stage uses the Go version go.mod pins.
	want := goModVersion(t)
	var argV string
	for _, a := range instructions(ins, "ARG", -1) {
		if v, ok := strings.CutPrefix(a.Args, "GO_VERSION="); ok {
			argV = v
		}
	}
	if argV != want {
		t.Errorf("Dockerfile: ARG GO_VERSION=%q, want go.mod's %q", argV, want)
	}
	if !strings.HasPrefix(froms[0].Args, "golang:${GO_VERSION}") {
		t.Errorf("Dockerfile:%d: build stage FROM %q, want golang:${GO_VERSION}...", froms[0].Line, froms[0].Args)
	}
	base := strings.Fields(froms[len(froms)-1].Args)[0]
	if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("Dockerfile:%d: final stage FROM %q, want distroless/static or scratch (no shell at run time)", froms[len(froms)-1].Line, base)
	}

	env := buildEnv(t, ins)
	if !contains(env, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile: build stage ENV lacks CGO_ENABLED=0, got %v", env)
	}
	builds := goBuilds(t, ins)
	if len(builds) < 2 {
		t.Fatalf("Dockerfile: want go build RUNs for recstream and healthcheck, got %d", len(builds))
	}
	for _, b := range builds {
		if !contains(b, "-trimpath") {
			t.Errorf("Dockerfile: %v lacks -trimpath", b)
		}
	}

	users := instructions(ins, "USER", final)
	if len(users) == 0 {
		t.Fatal("Dockerfile: final stage sets no USER (would run as root)")
	}
	if uid, _ := imageUser(t, ins); uid == 0 {
		t.Errorf("Dockerfile: USER %q is root", users[len(users)-1].Args)
	}
	if s := instructions(ins, "STOPSIGNAL", final); len(s) != 1 || s[0].Args != "SIGTERM" {
		t.Errorf("Dockerfile: want STOPSIGNAL SIGTERM in the final stage, got %v", s)
	}
	_, port := metricsListen(t)
	if e := instructions(ins, "EXPOSE", final); len(e) != 1 || e[0].Args != port {
		t.Errorf("Dockerfile: want EXPOSE %s (metrics.listen port), got %v", port, e)
	}
	var copiesConfig bool
	for _, c := range instructions(ins, "COPY", final) {
		if f := strings.Fields(c.Args); len(f) == 2 && f[0] == "config.yaml" {
			copiesConfig = true
		}
	}
	if !copiesConfig {
		t.Error("Dockerfile: final stage does not COPY config.yaml")
	}
	eps := instructions(ins, "ENTRYPOINT", final)
	if len(eps) != 1 {
		t.Fatalf("Dockerfile: want one ENTRYPOINT, got %d", len(eps))
	}
	var ep []string
	if err := json.Unmarshal([]byte(eps[0].Args), &ep); err != nil || len(ep) != 1 || ep[0] != "/usr/local/bin/recstream" {
		t.Errorf("Dockerfile:%d: ENTRYPOINT must be exec form [\"/usr/local/bin/recstream\"] (no shell), got %s", eps[0].Line, eps[0].Args)
	}
}

func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ignored := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			ignored[strings.TrimPrefix(l, "/")] = true
		}
	}
	for _, need := range []string{"go.mod", "go.sum", "config.yaml", "cmd", "deploy", "deploy/healthcheck", "internal", "sql", "worker", "batch", "inference", "checkpoint"} {
		if ignored[need] {
			t.Errorf(".dockerignore excludes %s, which the image build needs", need)
		}
	}
	for _, must := range []string{".git", ".stack", "recstream"} {
		if !ignored[must] {
			t.Errorf(".dockerignore should exclude %s from the build context", must)
		}
	}
}

// buildEnv returns the build stage's ENV pairs.
func buildEnv(t *testing.T, ins []deploy.Instruction) []string {
	t.Helper()
	var env []string
	for _, e := range instructions(ins, "ENV", 0) {
		p, err := deploy.EnvPairs(e.Args)
		if err != nil {
			t.Fatalf("Dockerfile:%d: %v", e.Line, err)
		}
		env = append(env, p...)
	}
	return env
}

// goBuilds returns the argv of each `go build` RUN in the build stage.
func goBuilds(t *testing.T, ins []deploy.Instruction) [][]string {
	t.Helper()
	var out [][]string
	for _, r := range instructions(ins, "RUN", 0) {
		w, err := deploy.ShellWords(r.Args)
		if err != nil {
			t.Fatalf("Dockerfile:%d: %v", r.Line, err)
		}
		if len(w) >= 2 && w[0] == "go" && w[1] == "build" {
			if contains(w, "&&") || contains(w, ";") {
				t.Fatalf("Dockerfile:%d: keep each go build in a RUN of its own so the test can repeat it", r.Line)
			}
			out = append(out, w)
		}
	}
	return out
}

// imageUser returns the final stage's USER as uid and gid (numeric, so no /etc/passwd lookup).
func imageUser(t *testing.T, ins []deploy.Instruction) (uint32, uint32) {
	t.Helper()
	users := instructions(ins, "USER", lastStage(ins))
	if len(users) == 0 {
		t.Fatal("Dockerfile: no USER in the final stage")
	}
	u, g, _ := strings.Cut(users[len(users)-1].Args, ":")
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		t.Fatalf("Dockerfile: USER %q: use a numeric uid[:gid] (Kubernetes/ECS can then verify runAsNonRoot)", users[len(users)-1].Args)
	}
	gid := uid
	if g != "" {
		if gid, err = strconv.ParseUint(g, 10, 32); err != nil {
			t.Fatalf("Dockerfile: USER %q: bad gid", users[len(users)-1].Args)
		}
	}
	return uint32(uid), uint32(gid)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestImageBinariesStaticAndNonRoot repeats the Dockerfile's go build commands (same
// environment, same flags; only the -o directory differs), checks that the binaries are static
// ELF files built without cgo, and runs them as the image's non-root user: recstream parses
// its config from the image's working directory and checks a command line; healthcheck probes
// a live /healthz and a failing one. No Docker engine runs here, so this is what can be checked
// of the image without one.
func TestImageBinariesStaticAndNonRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image's binaries (about a minute on a cold cache); runs without -short, e.g. in make test")
	}
	ins := dockerfile(t)
	env := append(os.Environ(), buildEnv(t, ins)...)
	root := t.TempDir()
	binDir := filepath.Join(root, "usr", "local", "bin")
	workDir := filepath.Join(root, "etc", "recstream")
	for _, d := range []string{binDir, workDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bins := map[string]string{}
	for _, argv := range goBuilds(t, ins) {
		args := append([]string(nil), argv[1:]...)
		for i := range args {
			if args[i] == "-o" && i+1 < len(args) {
				name := filepath.Base(args[i+1])
				args[i+1] = filepath.Join(binDir, name)
				bins[name] = args[i+1]
			}
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, name := range []string{"recstream", "healthcheck"} {
		p, ok := bins[name]
		if !ok {
			t.Fatalf("Dockerfile builds no %s binary", name)
		}
		checkStatic(t, p)
	}
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(workDir, "config.yaml"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(root), root, filepath.Join(root, "usr"), filepath.Join(root, "usr", "local"), binDir, filepath.Join(root, "etc"), workDir} {
		if err := os.Chmod(d, 0o755); err != nil { // t.TempDir is 0700: let the image user in
			t.Fatal(err)
		}
	}
	uid, gid := imageUser(t, ins)

	run := func(t *testing.T, want int, bin string, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = workDir // the image's WORKDIR: recstream finds config.yaml by its default path
		cmd.Env = []string{"PATH=/usr/local/bin", "HOME=/nonexistent"}
		switch os.Getuid() {
		case 0:
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
		default:
			t.Logf("not root: running as the current uid %d, itself non-root", os.Getuid())
		}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s %v: %v", bin, args, err)
		}
		if code != want {
			t.Fatalf("%s %v as uid %d: exit %d, want %d\n%s", filepath.Base(bin), args, uid, code, want, out)
		}
	}
	t.Run("recstream", func(t *testing.T) {
		run(t, 0, bins["recstream"], "--check-args", "migrate")
		run(t, 2, bins["recstream"], "--check-args", "no-such-command")
	})
	t.Run("healthcheck", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
			}
		}))
		defer srv.Close()
		run(t, 0, bins["healthcheck"], srv.URL+"/healthz")
		run(t, 1, bins["healthcheck"], srv.URL+"/readyz")
		run(t, 2, bins["healthcheck"], "not a url")
	})
}

// checkStatic fails unless path is a static ELF executable built with CGO_ENABLED=0 and
// -trimpath.
func checkStatic(t *testing.T, path string) {
	t.Helper()
	for _, p := range staticProblems(path) {
		t.Errorf("%s: %s", path, p)
	}
}

// staticProblems lists why path is not a static, cgo-free, -trimpath Go executable.
func staticProblems(path string) []string {
	f, err := elf.Open(path)
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	var out []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			out = append(out, "has a PT_INTERP program header (dynamically linked)")
		}
		if p.Type == elf.PT_DYNAMIC {
			out = append(out, "has a PT_DYNAMIC segment")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		out = append(out, fmt.Sprintf("DT_NEEDED %v (%v), want none", libs, err))
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return append(out, "no Go build info: "+err.Error())
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		out = append(out, fmt.Sprintf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"]))
	}
	return out
}

// TestStaticCheckRejectsDynamic: the ELF check can fail (on the system's dynamically linked ls).
func TestStaticCheckRejectsDynamic(t *testing.T) {
	const dyn = "/bin/ls"
	if _, err := os.Stat(dyn); err != nil {
		t.Fatalf("%s not present to serve as a dynamic executable (every Debian system has it): %v", dyn, err)
	}
	got := strings.Join(staticProblems(dyn), "; ")
	if !strings.Contains(got, "PT_INTERP") || !strings.Contains(got, "DT_NEEDED") {
		t.Errorf("staticProblems(%s) = %q, want PT_INTERP and DT_NEEDED findings", dyn, got)
	}
}
