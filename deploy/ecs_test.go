package deploy_test

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"gopkg.in/yaml.v3"

	"github.com/recstream/recstream/deploy"
)

// shippedConfig is the part of config.yaml the deployment files must agree with.
type shippedConfig struct {
	Kinesis struct {
		Stream string `yaml:"stream"`
	} `yaml:"kinesis"`
	DynamoDB struct {
		LeaseTable string `yaml:"lease_table"`
	} `yaml:"dynamodb"`
	S3 struct {
		Buckets map[string]string `yaml:"buckets"`
	} `yaml:"s3"`
	Worker struct {
		ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	} `yaml:"worker"`
	Metrics struct {
		Listen string `yaml:"listen"`
	} `yaml:"metrics"`
}

func loadShippedConfig(t *testing.T) shippedConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c shippedConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if c.Worker.ShutdownTimeout <= 0 || c.Metrics.Listen == "" || c.Kinesis.Stream == "" || c.DynamoDB.LeaseTable == "" || len(c.S3.Buckets) == 0 {
		t.Fatalf("config.yaml: missing worker.shutdown_timeout, metrics.listen, kinesis.stream, dynamodb.lease_table or s3.buckets: %+v", c)
	}
	return c
}

// metricsListen returns config.yaml's metrics.listen host and port.
func metricsListen(t *testing.T) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(loadShippedConfig(t).Metrics.Listen)
	if err != nil {
		t.Fatalf("config.yaml metrics.listen: %v", err)
	}
	return host, port
}

// bucketNames returns the bucket names of config.yaml's s3.buckets (s3://bucket[/prefix]).
func bucketNames(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for role, v := range loadShippedConfig(t).S3.Buckets {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "s3" {
			t.Fatalf("config.yaml s3.buckets.%s: want s3://bucket, got %q", role, v)
		}
		out[role] = u.Host
	}
	return out
}

const ecsDir = "ecs"

type taskDef struct {
	path string
	in   struct {
		family     string
		containers []ecstypes.ContainerDefinition
		taskRole   string
		execRole   string
	}
}

func loadTaskDefs(t *testing.T) map[string]taskDef {
	t.Helper()
	files, err := deploy.Files(ecsDir, "taskdef-*.json")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]taskDef{}
	for _, f := range files {
		in, err := deploy.LoadTaskDefinition(f, deploy.Placeholders)
		if err != nil {
			t.Fatal(err)
		}
		var td taskDef
		td.path = f
		td.in.family = deref(in.Family)
		td.in.containers = in.ContainerDefinitions
		td.in.taskRole, td.in.execRole = deref(in.TaskRoleArn), deref(in.ExecutionRoleArn)
		out[strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "taskdef-"), ".json")] = td
	}
	return out
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

func envOf(c ecstypes.ContainerDefinition) map[string]string {
	m := map[string]string{}
	for _, kv := range c.Environment {
		m[deref(kv.Name)] = deref(kv.Value)
	}
	return m
}

// TestTaskDefinitionsDecodeStrictly: every taskdef-*.json is a RegisterTaskDefinitionInput
// without unknown fields, with every placeholder known, and the parts common to all tasks are
// right: awslogs, secrets from Secrets Manager / SSM, separate task and execution roles.
func TestTaskDefinitionsDecodeStrictly(t *testing.T) {
	tds := loadTaskDefs(t)
	for _, want := range []string{"worker", "batch-etl", "batch-model", "replay", "compact"} {
		if _, ok := tds[want]; !ok {
			t.Errorf("deploy/ecs: missing taskdef-%s.json", want)
		}
	}
	for name, td := range tds {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(td.path)
			if err != nil {
				t.Fatal(err)
			}
			// Verbatim decode as well: the placeholders must not sit where a number belongs.
			if _, err := deploy.LoadTaskDefinition(td.path, nil); err != nil {
				t.Errorf("decode with placeholders verbatim: %v", err)
			}
			for _, p := range deploy.PlaceholdersIn(string(raw)) {
				if _, ok := deploy.Placeholders[p]; !ok {
					t.Errorf("%s: unknown placeholder ${%s} (add it to deploy.Placeholders and the runbook)", td.path, p)
				}
			}
			if td.in.family != "recstream-"+name {
				t.Errorf("%s: family %q, want recstream-%s", td.path, td.in.family, name)
			}
			if td.in.taskRole == "" || td.in.execRole == "" || td.in.taskRole == td.in.execRole {
				t.Errorf("%s: want distinct taskRoleArn and executionRoleArn, got %q and %q", td.path, td.in.taskRole, td.in.execRole)
			}
			if len(td.in.containers) == 0 {
				t.Fatalf("%s: no containers", td.path)
			}
			for _, c := range td.in.containers {
				checkContainer(t, td.path, c)
			}
		})
	}
}

func checkContainer(t *testing.T, path string, c ecstypes.ContainerDefinition) {
	t.Helper()
	name := deref(c.Name)
	if !strings.Contains(deref(c.Image), "/recstream:") {
		t.Errorf("%s %s: image %q is not the recstream image", path, name, deref(c.Image))
	}
	if len(c.EntryPoint) > 0 {
		t.Errorf("%s %s: entryPoint set; the image's ENTRYPOINT is the binary, use command", path, name)
	}
	if len(c.Command) == 0 {
		t.Errorf("%s %s: no command", path, name)
	}
	lc := c.LogConfiguration
	if lc == nil || lc.LogDriver != ecstypes.LogDriverAwslogs {
		t.Errorf("%s %s: want logDriver awslogs", path, name)
	} else {
		for _, k := range []string{"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} {
			if lc.Options[k] == "" {
				t.Errorf("%s %s: awslogs option %s missing", path, name, k)
			}
		}
		if lc.Options["awslogs-create-group"] == "true" {
			t.Errorf("%s %s: awslogs-create-group needs logs:CreateLogGroup; create the group once instead", path, name)
		}
	}
	env := envOf(c)
	if env["RECSTREAM_LOG_FORMAT"] != "json" {
		t.Errorf("%s %s: RECSTREAM_LOG_FORMAT=%q, want json (awslogs ships the JSON lines as they are)", path, name, env["RECSTREAM_LOG_FORMAT"])
	}
	for k, v := range env {
		if strings.Contains(k, "PASSWORD") || strings.Contains(k, "SECRET") || strings.HasPrefix(k, "AWS_ACCESS") {
			t.Errorf("%s %s: %s is set in plain environment; use secrets", path, name, k)
		}
		if strings.Contains(v, "127.0.0.1") || strings.Contains(v, "localhost") {
			if k != "RECSTREAM_METRICS_LISTEN" {
				t.Errorf("%s %s: %s=%q points at the local stack", path, name, k, v)
			}
		}
	}
	for _, ep := range []string{"RECSTREAM_KINESIS_ENDPOINT", "RECSTREAM_DYNAMODB_ENDPOINT", "RECSTREAM_S3_ENDPOINT"} {
		if v, ok := env[ep]; !ok || v != "" {
			t.Errorf("%s %s: %s must be set to \"\" (AWS endpoints; config.yaml's default is the local stack)", path, name, ep)
		}
	}
	secrets := map[string]string{}
	for _, s := range c.Secrets {
		secrets[deref(s.Name)] = deref(s.ValueFrom)
	}
	if _, ok := secrets["RECSTREAM_POSTGRES_PASSWORD"]; !ok {
		t.Errorf("%s %s: RECSTREAM_POSTGRES_PASSWORD not among secrets", path, name)
	}
	for k, v := range secrets {
		if !strings.HasPrefix(v, "arn:aws:secretsmanager:") && !strings.HasPrefix(v, "arn:aws:ssm:") {
			t.Errorf("%s %s: secret %s from %q, want a Secrets Manager or SSM parameter ARN", path, name, k, v)
		}
	}
}

// TestWorkerTaskDefinition: health check on /healthz at the metrics port, stop timeout above the
// drain bound, metrics reachable from outside the container.
func TestWorkerTaskDefinition(t *testing.T) {
	cfg := loadShippedConfig(t)
	_, port := metricsListen(t)
	td, ok := loadTaskDefs(t)["worker"]
	if !ok {
		t.Fatal("deploy/ecs/taskdef-worker.json missing")
	}
	if len(td.in.containers) != 1 {
		t.Fatalf("%s: want one container, got %d", td.path, len(td.in.containers))
	}
	c := td.in.containers[0]
	if got := strings.Join(c.Command, " "); got != "worker" {
		t.Errorf("%s: command %q, want worker", td.path, got)
	}
	env := envOf(c)
	listen := cfg.Metrics.Listen
	if v, ok := env["RECSTREAM_METRICS_LISTEN"]; ok {
		listen = v
	}
	host, lport, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("%s: metrics listen %q: %v", td.path, listen, err)
	}
	if lport != port {
		t.Errorf("%s: RECSTREAM_METRICS_LISTEN port %s differs from config.yaml's %s", td.path, lport, port)
	}
	if host != "0.0.0.0" && host != "" {
		t.Errorf("%s: metrics listen host %q: the port mapping and scrapers cannot reach it; use 0.0.0.0", td.path, host)
	}
	var mapped bool
	for _, pm := range c.PortMappings {
		if pm.ContainerPort != nil && *pm.ContainerPort > 0 && lport == itoa(*pm.ContainerPort) {
			mapped = true
		}
	}
	if !mapped {
		t.Errorf("%s: no portMapping for the metrics port %s", td.path, lport)
	}
	if c.DockerLabels["ECS_PROMETHEUS_EXPORTER_PORT"] != lport || c.DockerLabels["ECS_PROMETHEUS_METRICS_PATH"] != "/metrics" {
		t.Errorf("%s: Prometheus discovery labels %v, want port %s and path /metrics", td.path, c.DockerLabels, lport)
	}

	hc := c.HealthCheck
	if hc == nil || len(hc.Command) < 3 || hc.Command[0] != "CMD" {
		t.Fatalf("%s: want healthCheck.command [\"CMD\", \"/usr/local/bin/healthcheck\", URL] (exec form: the image has no shell)", td.path)
	}
	if hc.Command[1] != "/usr/local/bin/healthcheck" {
		t.Errorf("%s: health check runs %q, want the image's /usr/local/bin/healthcheck", td.path, hc.Command[1])
	}
	u, err := url.Parse(hc.Command[len(hc.Command)-1])
	if err != nil {
		t.Fatalf("%s: health check URL: %v", td.path, err)
	}
	if u.Path != "/healthz" || u.Port() != port || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost") {
		t.Errorf("%s: health check URL %s, want http://127.0.0.1:%s/healthz (liveness, not /readyz: a PostgreSQL outage must not restart every task)", td.path, u, port)
	}

	// ECS sends SIGTERM, waits stopTimeout, then SIGKILLs: the drain must fit with room to spare.
	minStop := cfg.Worker.ShutdownTimeout + 5*time.Second
	if c.StopTimeout == nil || time.Duration(*c.StopTimeout)*time.Second < minStop {
		t.Errorf("%s: stopTimeout %v s, want >= worker.shutdown_timeout (%s) + 5s = %s", td.path, deref(c.StopTimeout), cfg.Worker.ShutdownTimeout, minStop)
	}
	if c.StopTimeout != nil && *c.StopTimeout > 120 {
		t.Errorf("%s: stopTimeout %d s exceeds Fargate's 120 s maximum", td.path, *c.StopTimeout)
	}
	if v, ok := env["RECSTREAM_WORKER_SHUTDOWN_TIMEOUT"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d+5*time.Second > time.Duration(deref(c.StopTimeout))*time.Second {
			t.Errorf("%s: RECSTREAM_WORKER_SHUTDOWN_TIMEOUT=%q does not fit stopTimeout %d s with 5 s to spare", td.path, v, deref(c.StopTimeout))
		}
	}

	svc, err := deploy.LoadService(filepath.Join(ecsDir, "service-worker.json"), deploy.Placeholders)
	if err != nil {
		t.Fatal(err)
	}
	if deref(svc.TaskDefinition) != td.in.family {
		t.Errorf("service-worker.json: taskDefinition %q, want %q", deref(svc.TaskDefinition), td.in.family)
	}
	if deref(svc.DesiredCount) < 2 {
		t.Errorf("service-worker.json: desiredCount %d, want >= 2 (a killed task's shards fail over to the other)", deref(svc.DesiredCount))
	}
	if dc := svc.DeploymentConfiguration; dc == nil || deref(dc.MinimumHealthyPercent) < 100 {
		t.Error("service-worker.json: deploymentConfiguration.minimumHealthyPercent must be 100 (keep every shard leased during a deploy)")
	}
}

func itoa(v int32) string { return strconv.Itoa(int(v)) }

// TestBatchTaskDefinitions: etl alone; train then embeddings in one task, embeddings only after
// train succeeded.
func TestBatchTaskDefinitions(t *testing.T) {
	tds := loadTaskDefs(t)
	etl := tds["batch-etl"]
	if len(etl.in.containers) != 1 || strings.Join(etl.in.containers[0].Command, " ") != "batch etl" {
		t.Errorf("%s: want one container running `batch etl`", etl.path)
	}
	model := tds["batch-model"]
	cmds := map[string]ecstypes.ContainerDefinition{}
	for _, c := range model.in.containers {
		cmds[strings.Join(c.Command, " ")] = c
	}
	train, okT := cmds["train"]
	emb, okE := cmds["batch embeddings"]
	if !okT || !okE || len(cmds) != 2 {
		t.Fatalf("%s: want containers running `train` and `batch embeddings`, got %v", model.path, deploy.SortedKeys(cmds))
	}
	if len(emb.DependsOn) != 1 || deref(emb.DependsOn[0].ContainerName) != deref(train.Name) || emb.DependsOn[0].Condition != ecstypes.ContainerConditionSuccess {
		t.Errorf("%s: batch embeddings must dependsOn train with condition SUCCESS", model.path)
	}
	if deref(train.Essential) || !deref(emb.Essential) {
		t.Errorf("%s: train must be non-essential (it exits before embeddings starts) and embeddings essential", model.path)
	}
	for _, td := range []taskDef{etl, model} {
		if strings.Contains(td.in.taskRole, "worker") {
			t.Errorf("%s: batch tasks must not use the worker's task role", td.path)
		}
	}
}

// schedulePeriods is how often each scheduled command runs: the batch jobs nightly, compact
// hourly (the Iceberg table's closed hours, deploy/cron's :15).
var schedulePeriods = map[string]time.Duration{
	"batch etl":        24 * time.Hour,
	"train":            24 * time.Hour,
	"batch embeddings": 24 * time.Hour,
	"compact":          time.Hour,
}

// TestSchedules: every schedule-*.json is a CreateScheduleInput whose expression parses; it
// targets an existing task definition, which the scheduler role may run and pass the roles of;
// each command fires at its period; etl fires before train + embeddings each day.
func TestSchedules(t *testing.T) {
	files, err := deploy.Files(ecsDir, "schedule-*.json")
	if err != nil {
		t.Fatal(err)
	}
	tds := loadTaskDefs(t)
	scheduler, err := deploy.LoadPolicy(filepath.Join(iamDir, "scheduler-role.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The task definitions and schedules are loaded with deploy.Placeholders substituted: so
	// are the role's resources here.
	grants := func(action, resource string) bool {
		for _, s := range scheduler.Statement {
			if s.Effect != "Allow" || !slices.Contains(s.Action, action) {
				continue
			}
			for _, r := range s.Resource {
				if got, err := deploy.Substitute(r, deploy.Placeholders); err == nil && got == resource {
					return true
				}
			}
		}
		return false
	}
	next := map[string]time.Time{}
	for _, f := range files {
		in, expr, err := deploy.LoadSchedule(f, deploy.Placeholders)
		if err != nil {
			t.Fatal(err)
		}
		if !expr.IsCron() {
			t.Errorf("%s: %s: nightly jobs need a cron() expression at a fixed time", f, expr.Raw)
			continue
		}
		loc, err := time.LoadLocation(deref(in.ScheduleExpressionTimezone))
		if err != nil || in.ScheduleExpressionTimezone == nil {
			t.Fatalf("%s: ScheduleExpressionTimezone %q: %v", f, deref(in.ScheduleExpressionTimezone), err)
		}
		tgt := in.Target
		if tgt == nil || tgt.EcsParameters == nil {
			t.Fatalf("%s: want an ECS RunTask target", f)
		}
		arn := deref(tgt.EcsParameters.TaskDefinitionArn)
		family := arn[strings.LastIndex(arn, "/")+1:]
		var td taskDef
		for _, d := range tds {
			if d.in.family == family {
				td = d
			}
		}
		if td.path == "" {
			t.Fatalf("%s: target task definition %q is not among deploy/ecs/taskdef-*.json", f, family)
		}
		if !strings.HasSuffix(deref(tgt.RoleArn), ":role/recstream-scheduler") {
			t.Errorf("%s: RoleArn %q, want the recstream-scheduler role (deploy/iam/scheduler-role.json)", f, deref(tgt.RoleArn))
		}
		// The first firing after a fixed midnight, in the schedule's zone.
		day := time.Date(2026, 3, 2, 0, 0, 0, 0, loc)
		n, ok := expr.Next(day.Add(-time.Minute))
		if !ok {
			t.Fatalf("%s: %s never fires", f, expr.Raw)
		}
		for _, c := range td.in.containers {
			cmd := strings.Join(c.Command, " ")
			period, ok := schedulePeriods[cmd]
			if !ok {
				t.Errorf("%s: schedules %q, which has no period in schedulePeriods", f, cmd)
				continue
			}
			if n2, _ := expr.Next(n); n2.Sub(n) != period {
				t.Errorf("%s: %s fires at %s then %s, want every %s for %s", f, expr.Raw, n, n2, period, cmd)
			}
			next[cmd] = n
		}
		// The scheduler role must be allowed to start the task and hand it its roles.
		if want := arn + ":*"; !grants("ecs:RunTask", want) {
			t.Errorf("%s: scheduler-role.json grants no ecs:RunTask on %s", f, want)
		}
		for _, role := range []string{td.in.taskRole, td.in.execRole} {
			if !grants("iam:PassRole", role) {
				t.Errorf("%s: scheduler-role.json grants no iam:PassRole on %s (task definition %s)", f, role, td.path)
			}
		}
	}
	if _, ok := next["compact"]; !ok {
		t.Error("no schedule runs compact (the Iceberg table's hourly maintenance, deploy/ecs/schedule-compact.json)")
	}
	etl, okE := next["batch etl"]
	train, okT := next["train"]
	emb, okB := next["batch embeddings"]
	if !okE || !okT || !okB {
		t.Fatalf("schedules cover %v, want batch etl, train and batch embeddings", deploy.SortedKeys(next))
	}
	if !etl.Before(train) || train.After(emb) || train.Sub(etl) < 30*time.Minute {
		t.Errorf("schedule order: etl %s, train %s, embeddings %s: want etl at least 30 min before train, embeddings with or after train",
			etl.Format("15:04"), train.Format("15:04"), emb.Format("15:04"))
	}
}

// TestReplayTaskDefinition: the operator-run replay task runs `replay` (the range flags are
// given at run time with a command override) under its own task role, sized like the worker:
// it runs one shard's processor at a time with the same model in memory.
func TestReplayTaskDefinition(t *testing.T) {
	tds := loadTaskDefs(t)
	td, ok := tds["replay"]
	if !ok {
		t.Fatal("deploy/ecs/taskdef-replay.json missing")
	}
	if len(td.in.containers) != 1 {
		t.Fatalf("%s: want one container, got %d", td.path, len(td.in.containers))
	}
	c := td.in.containers[0]
	if got := strings.Join(c.Command, " "); got != "replay" {
		t.Errorf("%s: command %q, want replay (the operator overrides it with the range)", td.path, got)
	}
	if deref(c.Name) != "replay" || !deref(c.Essential) {
		t.Errorf("%s: want one essential container named replay (the runbook's override names it), got %q", td.path, deref(c.Name))
	}
	if !strings.HasSuffix(td.in.taskRole, ":role/recstream-replay-task") {
		t.Errorf("%s: taskRoleArn %q, want the recstream-replay-task role (deploy/iam/replay-task-role.json)", td.path, td.in.taskRole)
	}
	in, err := deploy.LoadTaskDefinition(td.path, deploy.Placeholders)
	if err != nil {
		t.Fatal(err)
	}
	w, err := deploy.LoadTaskDefinition(tds["worker"].path, deploy.Placeholders)
	if err != nil {
		t.Fatal(err)
	}
	if deref(in.Cpu) != deref(w.Cpu) || deref(in.Memory) != deref(w.Memory) {
		t.Errorf("%s: cpu/memory %s/%s, want the worker's %s/%s", td.path, deref(in.Cpu), deref(in.Memory), deref(w.Cpu), deref(w.Memory))
	}
}

// TestCompactTaskDefinition: the hourly `compact` task (Iceberg output only) runs under its own
// role (deploy/iam/compact-task-role.json, which grants only the warehouse and the Glue
// catalog), with the table selected and the catalog pointed at Glue's Iceberg REST endpoint
// (the config's default is the local SQL catalog): without worker.output.table iceberg the
// command refuses to run.
func TestCompactTaskDefinition(t *testing.T) {
	td, ok := loadTaskDefs(t)["compact"]
	if !ok {
		t.Fatal("deploy/ecs/taskdef-compact.json missing")
	}
	if len(td.in.containers) != 1 {
		t.Fatalf("%s: want one container, got %d", td.path, len(td.in.containers))
	}
	c := td.in.containers[0]
	if got := strings.Join(c.Command, " "); got != "compact" {
		t.Errorf("%s: command %q, want compact", td.path, got)
	}
	if !strings.HasSuffix(td.in.taskRole, ":role/recstream-compact-task") {
		t.Errorf("%s: taskRoleArn %q, want the recstream-compact-task role (deploy/iam/compact-task-role.json)", td.path, td.in.taskRole)
	}
	env := envOf(c)
	for k, want := range map[string]string{
		"RECSTREAM_WORKER_OUTPUT_TABLE":                     "iceberg",
		"RECSTREAM_WORKER_OUTPUT_ICEBERG_CATALOG":           "rest",
		"RECSTREAM_WORKER_OUTPUT_ICEBERG_REST_SIGV4":        "true",
		"RECSTREAM_WORKER_OUTPUT_ICEBERG_REST_SIGNING_NAME": "glue",
	} {
		if env[k] != want {
			t.Errorf("%s: %s=%q, want %q", td.path, k, env[k], want)
		}
	}
	if u := env["RECSTREAM_WORKER_OUTPUT_ICEBERG_REST_URI"]; !strings.HasPrefix(u, "https://glue.") || !strings.HasSuffix(u, ".amazonaws.com/iceberg") {
		t.Errorf("%s: RECSTREAM_WORKER_OUTPUT_ICEBERG_REST_URI=%q, want Glue's Iceberg REST endpoint https://glue.<region>.amazonaws.com/iceberg", td.path, u)
	}
}

// TestTaskRolesRunTheirCommands: each task definition's task role recstream-<name>-task is
// deploy/iam/<name>-task-role.json, and every container's command is among the subcommands
// that policy is checked against (iam_test.go's roles), so a task never runs a subcommand under
// a role whose policy was not compared with what that subcommand calls.
func TestTaskRolesRunTheirCommands(t *testing.T) {
	for name, td := range loadTaskDefs(t) {
		_, role, found := strings.Cut(td.in.taskRole, ":role/")
		if !found || !strings.HasPrefix(role, "recstream-") || !strings.HasSuffix(role, "-task") {
			t.Errorf("%s: taskRoleArn %q, want arn:aws:iam::${AccountId}:role/recstream-<name>-task", td.path, td.in.taskRole)
			continue
		}
		policy := strings.TrimSuffix(strings.TrimPrefix(role, "recstream-"), "-task") + "-task-role.json"
		callers, ok := roles[policy]
		if !ok {
			t.Errorf("%s: task role %s has no policy deploy/iam/%s among the checked roles", td.path, role, policy)
			continue
		}
		for _, c := range td.in.containers {
			if cmd := strings.Join(c.Command, " "); !slices.Contains(callers, cmd) {
				t.Errorf("%s (%s) container %s runs %q under %s, whose policy is checked only against %v", td.path, name, deref(c.Name), cmd, policy, callers)
			}
		}
	}
}
