package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/pg"
)

// ShardStatus is one line of `recstream status`.
type ShardStatus struct {
	ShardID      string `json:"shard_id"`
	Owner        string `json:"owner"`         // "" when nobody holds the lease
	LeaseCounter int64  `json:"lease_counter"` // fencing token, moves on every renewal
	Checkpoint   string `json:"checkpoint"`    // last durable sequence number, SHARD_END, or ""
	Parent       string `json:"parent,omitempty"`
	Closed       bool   `json:"closed"`           // the shard reached SHARD_END (split or merged)
	LagMillis    *int64 `json:"lag_ms,omitempty"` // behind the stream tip; nil when unknown
	InLeaseTable bool   `json:"in_lease_table"`
	Error        string `json:"error,omitempty"`
	ShardLeaseInfo
}

// StatusReport is the whole `recstream status` answer.
type StatusReport struct {
	Stream            string         `json:"stream"`
	LeaseTable        string         `json:"lease_table"`
	Workers           []WorkerLeases `json:"workers"` // open shards per owner, sorted by owner
	Shards            []ShardStatus  `json:"shards"`
	ModelVersion      string         `json:"model_version"`      // artifacts latest pointer
	EmbeddingsVersion string         `json:"embeddings_version"` // live row of embedding_versions
	Problems          []string       `json:"problems,omitempty"` // parts that could not be read
}

func runStatus(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "status")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	sortBy := fs.String("sort", "shard", "order of the shard lines: shard, owner, lag or age (largest first)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := validSort(*sortBy); err != nil {
		return usageError{err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, awsenv.DefaultTimeout)
	defer cancel()
	cfg := app.Config
	rep := StatusReport{Stream: cfg.Kinesis.Stream, LeaseTable: cfg.DynamoDB.LeaseTable}

	kc, err := awsenv.Kinesis(ctx, cfg.Kinesis)
	if err != nil {
		return err
	}
	db, err := awsenv.DynamoDB(ctx, cfg.DynamoDB)
	if err != nil {
		return err
	}
	// Read-only use of the store: no lease is taken, the worker id is only a label.
	store, err := checkpoint.New(checkpoint.Config{Table: cfg.DynamoDB.LeaseTable, WorkerID: "recstream-status", FailoverTime: cfg.Worker.FailoverTime}, db)
	if err != nil {
		return err
	}
	leases, err := store.ListLeases(ctx)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	shards, err := listShards(ctx, kc, cfg.Kinesis.Stream)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	rep.Shards = mergeShards(leases, shards)
	addLeaseInfo(rep.Shards, leases, time.Now())
	fillLags(ctx, kc, cfg.Kinesis.Stream, rep.Shards)
	rep.Workers = workerLeases(rep.Shards)
	sortShards(rep.Shards, *sortBy)

	if root, err := openStore(ctx, app, "s3.buckets.artifacts", cfg.S3.Buckets.Artifacts); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	} else if v, err := artifacts.Resolve(ctx, root, artifacts.LatestName); err != nil {
		rep.Problems = append(rep.Problems, "model version: "+err.Error())
	} else {
		rep.ModelVersion = v
	}
	if pool, err := pg.Connect(ctx, cfg.Postgres); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	} else {
		defer pool.Close()
		idx, err := inference.NewVectorIndex(pool, cfg.Postgres)
		if err == nil {
			rep.EmbeddingsVersion, err = idx.LiveVersion(ctx)
		}
		if err != nil {
			rep.Problems = append(rep.Problems, "embeddings version: "+err.Error())
		}
	}

	if *asJSON {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printStatus(app, rep)
	return nil
}

func printStatus(app *App, rep StatusReport) {
	fmt.Fprintf(app.Stdout, "stream %s, lease table %s\n\n", rep.Stream, rep.LeaseTable)
	printWorkers(app.Stdout, rep.Workers)
	tw := tabwriter.NewWriter(app.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tOWNER\tCOUNTER\tCHECKPOINT\tLAG\tCHECKPOINT AGE\tCLOSED\tPARENT")
	for _, s := range rep.Shards {
		owner := s.Owner
		if owner == "" {
			owner = "-"
		}
		if !s.InLeaseTable {
			owner = "(no lease yet)"
		}
		lag := "?"
		if s.LagMillis != nil {
			lag = (time.Duration(*s.LagMillis) * time.Millisecond).String()
		}
		if s.Error != "" {
			lag = "error: " + s.Error
		}
		cp := s.Checkpoint
		if cp == "" {
			cp = "-"
		}
		parent := s.Parent
		if parent == "" {
			parent = "-"
		}
		if s.LeaseStale {
			owner += " (stale)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%v\t%s\n", s.ShardID, owner, s.LeaseCounter, cp, lag, ageText(s.CheckpointAgeMillis), s.Closed, parent)
	}
	tw.Flush()
	fmt.Fprintf(app.Stdout, "\nmodel version (artifacts latest): %s\nembeddings version (live):        %s\n", orDash(rep.ModelVersion), orDash(rep.EmbeddingsVersion))
	for _, p := range rep.Problems {
		fmt.Fprintf(app.Stdout, "problem: %s\n", p)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type kinesisShard struct {
	id, parent string
	closed     bool
}

func listShards(ctx context.Context, kc *kinesis.Client, stream string) ([]kinesisShard, error) {
	var out []kinesisShard
	in := &kinesis.ListShardsInput{StreamName: aws.String(stream)}
	for {
		page, err := kc.ListShards(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list shards of %s: %w", stream, err)
		}
		for _, s := range page.Shards {
			out = append(out, kinesisShard{id: aws.ToString(s.ShardId), parent: aws.ToString(s.ParentShardId),
				closed: s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil})
		}
		if page.NextToken == nil {
			return out, nil
		}
		// With NextToken, StreamName must be absent.
		in = &kinesis.ListShardsInput{NextToken: page.NextToken}
	}
}

// mergeShards joins the lease table with the stream's shard list: a shard the workers have not
// leased yet still shows, and so does a lease for a shard that has expired from the stream.
func mergeShards(leases []checkpoint.Lease, shards []kinesisShard) []ShardStatus {
	byID := map[string]*ShardStatus{}
	var order []string
	for _, l := range leases {
		byID[l.ShardID] = &ShardStatus{ShardID: l.ShardID, Owner: l.Owner, LeaseCounter: l.Counter, Checkpoint: l.Checkpoint,
			Parent: l.ParentShardID, Closed: l.Closed(), InLeaseTable: true}
		order = append(order, l.ShardID)
	}
	for _, s := range shards {
		st, ok := byID[s.id]
		if !ok {
			st = &ShardStatus{ShardID: s.id, Parent: s.parent}
			byID[s.id] = st
			order = append(order, s.id)
		}
		if st.Parent == "" {
			st.Parent = s.parent
		}
	}
	out := make([]ShardStatus, 0, len(order))
	seen := map[string]bool{}
	for _, id := range order {
		if !seen[id] {
			seen[id] = true
			out = append(out, *byID[id])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ShardID < out[j].ShardID })
	return out
}

// shardLag asks Kinesis how far the record after the checkpoint is behind the tip.
func shardLag(ctx context.Context, kc *kinesis.Client, stream, shard, cp string) (int64, error) {
	in := &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon}
	if cp != "" && cp != checkpoint.ShardEnd && !strings.EqualFold(cp, "TRIM_HORIZON") && !strings.EqualFold(cp, "LATEST") {
		in.ShardIteratorType = ktypes.ShardIteratorTypeAfterSequenceNumber
		in.StartingSequenceNumber = aws.String(cp)
	}
	it, err := kc.GetShardIterator(ctx, in)
	if err != nil {
		var rnf *ktypes.ResourceNotFoundException
		if errors.As(err, &rnf) {
			return 0, fmt.Errorf("shard gone from the stream")
		}
		return 0, fmt.Errorf("shard iterator: %w", err)
	}
	out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator, Limit: aws.Int32(1)})
	if err != nil {
		return 0, fmt.Errorf("get records: %w", err)
	}
	if len(out.Records) == 0 {
		return 0, nil // nothing after the checkpoint: caught up
	}
	lag := time.Since(aws.ToTime(out.Records[0].ApproximateArrivalTimestamp)).Milliseconds()
	return max(lag, aws.ToInt64(out.MillisBehindLatest)), nil
}
