package deploy_test

import (
	"fmt"
	"github.com/recstream/recstream/checkpoint"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/recstream/recstream/deploy"
)

const iamDir = "iam"

// OpLogPathEnv names the operation log (written by internal/awsenv under RECSTREAM_AWS_OPLOG
// while `make test` runs the demo) that TestPoliciesMatchRecordedOperations checks.
const opLogPathEnv = "RECSTREAM_IAM_OPLOG"

// roles maps each policy that a recstream process runs under to the subcommands that run under
// it. The worker ECS service runs `worker`; the scheduled batch tasks run the nightly jobs (and
// `migrate`, which the jobs also run implicitly); an operator runs `replay` as its own ECS task
// (deploy/ecs/taskdef-replay.json), apart from the worker so the live service's role gains no
// delete; an on-call engineer's own role gets the operator policy for `status` and `inspect`.
//
// With worker.output.table: iceberg, `worker`, `replay` and `inspect` are recorded as
// "<name>+iceberg" and run under their own policy plus an Iceberg one (worker-task-role-iceberg.json
// etc., attached to the same role only when the table is Iceberg): the table's warehouse
// (warehouse/ of the recommendations bucket, whose calls are recorded as "S3:<op>@warehouse" and
// granted only by statements scoped to warehouse/) and the Glue catalog. `compact` exists only
// for the Iceberg output and has a role of its own.
var roles = map[string][]string{
	"worker-task-role.json":         {"worker", "worker+iceberg"},
	"worker-task-role-iceberg.json": {"worker+iceberg"},
	"batch-task-role.json":          {"batch etl", "train", "batch embeddings", "migrate"},
	"replay-task-role.json":         {"replay", "replay+iceberg"},
	"replay-task-role-iceberg.json": {"replay+iceberg"},
	"compact-task-role.json":        {"compact"},
	"operator-policy.json":          {"status", "inspect", "inspect+iceberg"},
	"operator-policy-iceberg.json":  {"inspect+iceberg"},
}

// glueCatalog is why the Glue grants of the Iceberg policies are conditional: the local stack's
// catalog is the SQL catalog on PostgreSQL, and the Glue Iceberg REST endpoint is called over
// HTTP with SigV4 (iceberg-go's REST catalog), not through an AWS SDK client, so no run records
// them. Each is the IAM action of an Iceberg REST operation the code makes (AWS Glue, "REST APIs
// for Apache Iceberg specifications").
var glueCatalog = map[string]string{
	"glue:GetCatalog":     "GetConfig, made when the REST catalog is opened (Glue catalog only; not recorded: HTTP with SigV4, and the local catalog is SQL)",
	"glue:GetDatabase":    "LoadNamespaceMetadata (Glue catalog only; not recorded)",
	"glue:GetTable":       "LoadTable, before every commit and read (Glue catalog only; not recorded)",
	"glue:UpdateTable":    "UpdateTable, the commit (Glue catalog only; not recorded)",
	"glue:CreateDatabase": "CreateNamespace, when the worker starts on an account without the namespace (Glue catalog only; not recorded)",
	"glue:CreateTable":    "CreateTable, when the worker starts without the table (Glue catalog only; not recorded)",
}

// withGlue adds the Glue catalog's actions to a role's conditional grants.
func withGlue(m map[string]string, actions ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for _, a := range actions {
		out[a] = glueCatalog[a]
	}
	return out
}

// metadataCleanup: iceberg-go deletes the metadata.json files that fall out of the table's
// metadata log (write.metadata.previous-versions-max, 20) after a commit; a demo run commits
// fewer times than that per process.
const metadataCleanup = "iceberg-go deletes metadata.json files beyond write.metadata.previous-versions-max (20) after a commit; the demo's runs commit fewer times"

// notDeployed are subcommands recorded by the demo that never run in production: `produce`
// simulates the sales platform (which writes the stream itself) and `batch seed` loads demo
// data into MySQL. No policy grants what they call.
var notDeployed = map[string]string{
	"produce":    "simulator of the sales platform; in production the platform writes the stream",
	"batch seed": "loads generated or CSV demo data into MySQL; never run against production",
}

// conditional are actions a policy may grant although a run need not call them, because the
// code calls them only when a resource is missing. Each needs its reason.
var conditional = map[string]map[string]string{
	"worker-task-role.json": {
		"dynamodb:CreateTable": "checkpoint store creates the lease table (on-demand) when DescribeTable finds none; a run on an existing table does not call it",
		"dynamodb:DeleteItem":  "the KCL library's syncShard calls RemoveLeaseInfo for a lease whose shard left the stream listing (a closed parent, retention after a reshard); with worker.leader_assigned a worker deletes its presence row and the leader deletes those of workers gone",
		"dynamodb:Query":       "with worker.leader_assigned, workers Query the claim index (ClaimRequest-index) for the rows that name them; a fleet without leader_assigned never queries",
		"dynamodb:UpdateTable": "with worker.leader_assigned, the checkpoint store adds the claim index (ClaimRequest-index) to a lease table created without it; a table that has it, or a fleet without leader_assigned, is not updated",
	},
	"batch-task-role.json": {
		"s3:DeleteObject": "batch etl deletes the previous run's files of the partitions it rewrote and orphans of a crashed run; a first run on an empty datalake deletes nothing",
	},
	"replay-task-role.json": {
		"s3:DeleteObject": "replay deletes a redone flush's stale object only when its records moved between the output and errors/ (the model or enrichment changed); the demo replays with the same model and deletes nothing",
	},
	"worker-task-role-iceberg.json": withGlue(map[string]string{"s3:DeleteObject@warehouse": metadataCleanup},
		"glue:GetCatalog", "glue:GetDatabase", "glue:GetTable", "glue:UpdateTable", "glue:CreateDatabase", "glue:CreateTable"),
	"replay-task-role-iceberg.json": withGlue(map[string]string{"s3:DeleteObject@warehouse": metadataCleanup},
		"glue:GetCatalog", "glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"),
	"compact-task-role.json":       withGlue(nil, "glue:GetCatalog", "glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"),
	"operator-policy-iceberg.json": withGlue(nil, "glue:GetCatalog", "glue:GetDatabase", "glue:GetTable"),
}

// wholeBucketList are policies allowed to list a whole bucket (no s3:prefix condition).
var wholeBucketList = map[string]string{
	"operator-policy.json": "inspect summarises everything in the dedicated recommendations bucket (year=... and errors/)",
}

// nonCodeRoles are the policies no recstream code runs under (ECS agent, EventBridge Scheduler,
// trust policies); they get only the static checks.
var nonCodeRoles = map[string]bool{
	"task-execution-role.json": true,
	"scheduler-role.json":      true,
	"trust-ecs-tasks.json":     true,
	"trust-scheduler.json":     true,
}

// unchecked are example policies that no run of the demo exercises, so they get only the
// static checks (TestPoliciesStatic), never the comparison with recorded operations. Each says
// why; docs/deploy.md marks them as unchecked too.
var unchecked = map[string]string{
	"s3tables-catalog-iceberg.json": "the S3 Tables variant of the Iceberg policies' Glue statements (worker.output.iceberg.catalog rest with signing_name s3tables, warehouse the table bucket ARN): the local stack has no S3 Tables endpoint and the REST catalog is called over HTTP with SigV4, so no run records these actions; not verified against AWS",
}

func loadPolicies(t *testing.T) map[string]*deploy.Policy {
	t.Helper()
	files, err := deploy.Files(iamDir, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*deploy.Policy{}
	for _, f := range files {
		p, err := deploy.LoadPolicy(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		if _, ok := roles[name]; !ok && !nonCodeRoles[name] && unchecked[name] == "" {
			t.Errorf("%s: not assigned to a role in deploy/iam_test.go (roles, nonCodeRoles or unchecked)", f)
		}
		out[name] = p
	}
	for name := range roles {
		if out[name] == nil {
			t.Errorf("deploy/iam/%s missing", name)
		}
	}
	return out
}

var (
	actionRE = regexp.MustCompile(`^[a-z0-9-]+:[A-Za-z0-9]+$`)
	arnRE    = regexp.MustCompile(`^arn:aws:([a-z0-9-]+):([^:]*):([^:]*):(.+)$`)
)

// TestPoliciesStatic: no wildcard actions; every resource a named ARN in this account (or one
// of config.yaml's buckets) with "*" only at the end of a prefix; S3 only on config.yaml's
// buckets, DynamoDB only on the lease table, Kinesis only on the stream; no CloudWatch, because
// the code calls no CloudWatch API (metrics are Prometheus, logs go through awslogs).
func TestPoliciesStatic(t *testing.T) {
	cfg := loadShippedConfig(t)
	buckets := map[string]bool{}
	for _, b := range bucketNames(t) {
		buckets[b] = true
	}
	for name, p := range loadPolicies(t) {
		trust := strings.HasPrefix(name, "trust-")
		raw, err := os.ReadFile(filepath.Join(iamDir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, ph := range deploy.PlaceholdersIn(string(raw)) {
			if _, ok := deploy.Placeholders[ph]; !ok {
				t.Errorf("%s: unknown placeholder ${%s}", name, ph)
			}
		}
		for i, s := range p.Statement {
			where := name + " " + s.Sid
			if s.Sid == "" {
				t.Errorf("%s Statement[%d]: give it a Sid saying what it is for", name, i)
			}
			if s.Effect != "Allow" {
				continue
			}
			for _, a := range s.Action {
				if !actionRE.MatchString(a) {
					t.Errorf("%s: action %q: want service:Action with no wildcard", where, a)
				}
				if strings.HasPrefix(a, "cloudwatch:") {
					t.Errorf("%s: %s: the code calls no CloudWatch API (Prometheus metrics, awslogs driver)", where, a)
				}
			}
			if trust {
				if len(s.Resource) > 0 {
					t.Errorf("%s: a trust policy has no Resource", where)
				}
				for _, ps := range s.Principal {
					for _, pr := range ps {
						if strings.Contains(pr, "*") {
							t.Errorf("%s: wildcard principal %q", where, pr)
						}
					}
				}
				continue
			}
			if len(s.Resource) == 0 {
				t.Errorf("%s: no Resource", where)
			}
			for _, r := range s.Resource {
				if r == "*" {
					if len(s.Action) != 1 || s.Action[0] != "ecr:GetAuthorizationToken" {
						t.Errorf("%s: Resource \"*\" is allowed only for ecr:GetAuthorizationToken (no resource-level permissions), not %v", where, s.Action)
					}
					continue
				}
				checkResource(t, where, r, s.Action, buckets, cfg)
			}
		}
	}
}

func checkResource(t *testing.T, where, r string, actions []string, buckets map[string]bool, cfg shippedConfig) {
	t.Helper()
	m := arnRE.FindStringSubmatch(r)
	if m == nil {
		t.Errorf("%s: resource %q is not an ARN", where, r)
		return
	}
	svc, region, account, rest := m[1], m[2], m[3], m[4]
	if i := strings.IndexByte(r, '*'); i >= 0 && (i != len(r)-1 || !strings.ContainsRune("/:=", rune(r[i-1]))) {
		t.Errorf("%s: resource %q: \"*\" only as the last character after a / : or = (a prefix)", where, r)
	}
	if strings.Contains(r, "?") && !(svc == "secretsmanager" && strings.HasSuffix(r, "-??????") && strings.Count(r, "?") == 6) {
		t.Errorf("%s: resource %q: \"?\" only for a Secrets Manager secret's random -?????? suffix", where, r)
	}
	for _, a := range actions {
		if p, _, _ := strings.Cut(a, ":"); p != svc {
			t.Errorf("%s: action %s on a %s resource %q: split the statement by service", where, a, svc, r)
		}
	}
	switch svc {
	case "s3":
		bucket, key, _ := strings.Cut(rest, "/")
		if region != "" || account != "" || !buckets[bucket] {
			t.Errorf("%s: S3 resource %q: want arn:aws:s3:::<bucket>[/prefix] on a config.yaml bucket %v", where, r, deploy.SortedKeys(buckets))
		}
		for _, a := range actions {
			objectLevel := a != "s3:ListBucket"
			if objectLevel && (key == "" || key == "*") {
				t.Errorf("%s: %s on %q: object actions need a key prefix, not the whole bucket", where, a, r)
			}
			if !objectLevel && key != "" {
				t.Errorf("%s: s3:ListBucket on %q: it applies to the bucket; scope it with an s3:prefix condition", where, r)
			}
		}
	case "iam":
		if account != "${AccountId}" {
			t.Errorf("%s: resource %q: want account ${AccountId}", where, r)
		}
	default:
		if region != "${Region}" || account != "${AccountId}" {
			t.Errorf("%s: resource %q: want region ${Region} and account ${AccountId}", where, r)
		}
	}
	switch {
	case svc == "dynamodb" && rest != "table/"+cfg.DynamoDB.LeaseTable && rest != "table/"+cfg.DynamoDB.LeaseTable+"/index/"+checkpoint.IndexClaims:
		t.Errorf("%s: DynamoDB resource %q: only the lease table %s", where, r, cfg.DynamoDB.LeaseTable)
	case svc == "kinesis" && rest != "stream/"+cfg.Kinesis.Stream:
		t.Errorf("%s: Kinesis resource %q: only the stream %s", where, r, cfg.Kinesis.Stream)
	}
}

// TestWarehouseStatements: an S3 statement is either on the Iceberg warehouse (warehouse/ of the
// recommendations bucket, what config.yaml's empty worker.output.iceberg.warehouse means) or
// not, never both; the Iceberg policies and compact's grant S3 only there.
func TestWarehouseStatements(t *testing.T) {
	raw, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s+warehouse: ""`).Match(raw) {
		t.Errorf("config.yaml: worker.output.iceberg.warehouse is not empty: the policies' %s prefix assumes the default <recommendations>/warehouse", deploy.WarehousePrefix)
	}
	for name, p := range loadPolicies(t) {
		icebergOnly := strings.HasSuffix(name, "-iceberg.json") || name == "compact-task-role.json"
		for _, s := range p.Statement {
			class, mixed := s.S3Class()
			if mixed {
				t.Errorf("%s %s: S3 resources both in and out of %s: split the statement", name, s.Sid, deploy.WarehousePrefix)
			}
			isS3 := len(s.Action) > 0 && strings.HasPrefix(s.Action[0], "s3:")
			if icebergOnly && isS3 && class != deploy.WarehouseClass {
				t.Errorf("%s %s: an Iceberg policy grants S3 only on %s", name, s.Sid, deploy.WarehousePrefix)
			}
			if !icebergOnly && class == deploy.WarehouseClass {
				t.Errorf("%s %s: a grant on the warehouse belongs in an Iceberg policy", name, s.Sid)
			}
		}
	}
}

// TestListBucketHasPrefixCondition: a ListBucket grant is scoped to key prefixes.
func TestListBucketHasPrefixCondition(t *testing.T) {
	for name, p := range loadPolicies(t) {
		for _, s := range p.Statement {
			for _, a := range s.Action {
				if a == "s3:ListBucket" && len(s.Condition["StringLike"]["s3:prefix"]) == 0 && wholeBucketList[name] == "" {
					t.Errorf("%s %s: s3:ListBucket without a StringLike s3:prefix condition lists the whole bucket", name, s.Sid)
				}
			}
		}
	}
}

// deployedRoles is the role assignment the op-log check uses.
var deployedRoles = deploy.Roles{
	Callers:     roles,
	NotDeployed: notDeployed,
	Conditional: conditional,
	Silent:      map[string]bool{"migrate": true}, // PostgreSQL only
}

// TestPoliciesMatchRecordedOperations compares each role's policy with the AWS operations its
// subcommands called while `make test` ran the demo against the local stack (recorded by
// internal/awsenv to RECSTREAM_AWS_OPLOG, passed here as RECSTREAM_IAM_OPLOG): a policy must
// grant every action its code called and nothing else (except a documented conditional action).
func TestPoliciesMatchRecordedOperations(t *testing.T) {
	path := os.Getenv(opLogPathEnv)
	if path == "" {
		t.Skipf("%s is unset: under CI and locally this check runs as the last step of `make test`, after the demo has recorded every subcommand's AWS operations (RECSTREAM_AWS_OPLOG)", opLogPathEnv)
	}
	entries, err := deploy.ReadOpLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatalf("%s is empty: was the demo run with RECSTREAM_AWS_OPLOG=%s?", path, path)
	}
	problems, notes := deploy.ComparePolicies(entries, deployedRoles, loadPolicies(t))
	for _, n := range notes {
		t.Log(n)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", path, p)
	}
}

// TestActionsFor pins the operation → IAM action mapping, including the S3 operations whose
// action names differ.
func TestActionsFor(t *testing.T) {
	tests := []struct {
		op      string
		want    string
		wantErr bool
	}{
		{op: "Kinesis:GetRecords", want: "kinesis:GetRecords"},
		{op: "Kinesis:ListShards", want: "kinesis:ListShards"},
		{op: "Kinesis:DescribeStreamSummary", want: "kinesis:DescribeStreamSummary"},
		{op: "DynamoDB:PutItem", want: "dynamodb:PutItem"},
		{op: "DynamoDB:CreateTable", want: "dynamodb:CreateTable"},
		{op: "S3:PutObject", want: "s3:PutObject"},
		{op: "S3:ListObjectsV2", want: "s3:ListBucket"},
		{op: "S3:HeadObject", want: "s3:GetObject"},
		{op: "S3:GetObject", want: "s3:GetObject"},
		{op: "S3:DeleteObject", want: "s3:DeleteObject"},
		{op: "S3:DeleteObjects", want: "s3:DeleteObject"},
		{op: "S3:CopyObject", want: "s3:GetObject,s3:PutObject"},
		{op: "S3:SelectObjectContent", wantErr: true},
		{op: "Lambda:Invoke", wantErr: true},
		{op: "GetRecords", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			got, err := deploy.ActionsFor(tc.op)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ActionsFor(%q) error %v, wantErr %v", tc.op, err, tc.wantErr)
			}
			if !tc.wantErr && strings.Join(got, ",") != tc.want {
				t.Errorf("ActionsFor(%q) = %v, want %s", tc.op, got, tc.want)
			}
		})
	}
}

// TestComparePolicies runs the comparison on synthetic logs against the shipped policies, so
// the check is known to fail on a missing grant, an unused grant and an unassigned caller.
func TestComparePolicies(t *testing.T) {
	policies := loadPolicies(t)
	// A log that calls exactly what every role grants (minus conditional grants) passes.
	var full strings.Builder
	for _, role := range deploy.SortedKeys(roles) {
		caller := roles[role][0]
		for _, a := range deploy.SortedKeys(policies[role].AllowedActions()) {
			if conditional[role][a] != "" {
				continue
			}
			fmt.Fprintf(&full, "%s\t%s\n", caller, opFor(t, a))
		}
	}
	for _, role := range deploy.SortedKeys(roles) {
		for _, c := range roles[role][1:] {
			if !deployedRoles.Silent[c] {
				fmt.Fprintf(&full, "%s\tS3:GetObject\n", c)
			}
		}
	}
	tests := []struct {
		name string
		log  string
		want []string // substrings of expected problems; none means it must pass
	}{
		{name: "exact", log: full.String()},
		{name: "missing grant", log: full.String() + "worker\tKinesis:PutRecord\n", want: []string{"worker-task-role.json lacks kinesis:PutRecord"}},
		{name: "unused grant", log: strings.Replace(full.String(), "worker\tKinesis:GetRecords\n", "", 1), want: []string{"worker-task-role.json grants kinesis:GetRecords"}},
		// Replay reads the lease table with Scan only: a GetItem it started calling must fail.
		{name: "replay missing grant", log: full.String() + "replay\tDynamoDB:GetItem\n", want: []string{"replay-task-role.json lacks dynamodb:GetItem"}},
		{name: "replay unused grant", log: strings.Replace(full.String(), "replay\tS3:ListObjectsV2\n", "", 1), want: []string{"replay-task-role.json grants s3:ListBucket"}},
		{name: "unknown caller", log: full.String() + "reindex\tS3:GetObject\n", want: []string{`caller "reindex"`}},
		// The Hive worker's policy grants s3:GetObject, but not on the warehouse: a call there
		// needs the Iceberg policy, and a warehouse grant nobody calls is unused.
		{name: "warehouse call outside the Iceberg policy", log: full.String() + "worker\tS3:GetObject@warehouse\n", want: []string{"worker-task-role.json lacks s3:GetObject@warehouse"}},
		{name: "warehouse grant unused", log: strings.Replace(full.String(), "worker+iceberg\tS3:PutObject@warehouse\n", "", 1), want: []string{"worker-task-role-iceberg.json grants s3:PutObject@warehouse"}},
		{name: "warehouse class on a non-S3 operation", log: full.String() + "worker+iceberg\tKinesis:GetRecords@warehouse\n", want: []string{"only S3 operations have a class"}},
		{name: "unmapped operation", log: full.String() + "worker\tS3:SelectObjectContent\n", want: []string{"S3:SelectObjectContent"}},
		{name: "not deployed and test binaries ignored", log: full.String() + "produce\tKinesis:PutRecords\nworker.test\tS3:CreateBucket\n"},
		{name: "subcommand never ran", log: strings.ReplaceAll(full.String(), "status\t", "produce\t"), want: []string{`no AWS operation recorded for "status"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "oplog")
			if err := os.WriteFile(path, []byte(tc.log), 0o644); err != nil {
				t.Fatal(err)
			}
			entries, err := deploy.ReadOpLog(path)
			if err != nil {
				t.Fatal(err)
			}
			problems, _ := deploy.ComparePolicies(entries, deployedRoles, policies)
			got := strings.Join(problems, "\n")
			if len(tc.want) == 0 && len(problems) > 0 {
				t.Fatalf("unexpected problems:\n%s", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("want a problem containing %q, got:\n%s", w, got)
				}
			}
		})
	}
}

// opFor returns a recorded operation that needs IAM action a (the inverse of ActionsFor).
func opFor(t *testing.T, a string) string {
	t.Helper()
	svc := map[string]string{"kinesis": "Kinesis", "dynamodb": "DynamoDB", "s3": "S3"}
	a0, class, classed := strings.Cut(a, "@")
	p, name, _ := strings.Cut(a0, ":")
	op := svc[p] + ":" + name
	switch a0 {
	case "s3:ListBucket":
		op = "S3:ListObjectsV2"
	}
	if classed {
		op += "@" + class
	}
	got, err := deploy.ActionsFor(op)
	if err != nil || len(got) != 1 || got[0] != a {
		t.Fatalf("no operation maps to %s (tried %s: %v %v)", a, op, got, err)
	}
	return op
}

func TestReadOpLogNamesBadLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oplog")
	if err := os.WriteFile(path, []byte("worker\tKinesis:GetRecords\nbad line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.ReadOpLog(path); err == nil || !strings.Contains(err.Error(), ":2:") {
		t.Fatalf("ReadOpLog: want an error naming line 2, got %v", err)
	}
}
