package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/snappy"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/icetable"
)

// Table is what the processor needs from an Iceberg table (worker.output.table: iceberg);
// *icetable.Committer implements it.
//
// Exactly once through commits: a flush PUTs its data files under names that are a pure
// function of the stream, then asks for a commit that names the shard position the files
// follow and the one they end at; the commit lands only if the table still says the former
// (see icetable.Committer), and the DynamoDB checkpoint moves only after it landed. A new
// owner reads the table's position of the shard first and leaves out of its flushes every
// record the table already holds, so a crash between commit and checkpoint, a lost answer or
// an owner that was still finishing neither duplicates nor loses a record.
type Table interface {
	DataPath(hour time.Time, name string) string
	PutData(ctx context.Context, location string, body []byte) error
	Position(ctx context.Context, shard icetable.ShardKey) (icetable.Position, error)
	// Submit asks for r's commit and returns at once; the channel receives the outcome.
	// Requests are committed in the order they were submitted (a shard's next flush may be
	// submitted before the one before has landed: see icetable.Committer.Submit).
	Submit(ctx context.Context, r icetable.Request) <-chan error
	// Hurry makes the shard's submitted requests urgent (see icetable.Committer.Hurry).
	Hurry(shard icetable.ShardKey) bool
}

// tableView is a processor's knowledge of its shard in the table.
type tableView struct {
	known bool
	// pos is the shard's last committed position: read from the table before the first
	// flush, then moved by this processor's own commits as they land.
	pos icetable.Position
	// next is where the shard will be once every commit asked for has landed: the Prev of
	// the next flush's commit.
	next icetable.Position
}

// TableRecord is OutputRecord with arrival_time in microseconds, the only timestamp precision
// Iceberg's timestamptz allows. It converts from OutputRecord (same fields).
type TableRecord struct {
	SessionID         string       `parquet:"session_id"`
	CustomerNumber    int64        `parquet:"customer_number"`
	City              string       `parquet:"city"`
	Country           string       `parquet:"country"`
	CreditLimit       float64      `parquet:"credit_limit"`
	BrowseHistory     []BrowseItem `parquet:"browse_history,list"`
	RecommendedItems  []ScoredItem `parquet:"recommended_items,list"`
	SimilarItems      Similar      `parquet:"similar_items"`
	ShardID           string       `parquet:"shard_id"`
	SequenceNumber    string       `parquet:"sequence_number"`
	SubSequenceNumber int64        `parquet:"sub_sequence_number"`
	ArrivalTime       time.Time    `parquet:"arrival_time,timestamp(microsecond:utc)"`
	ModelVersion      string       `parquet:"model_version"`
}

// EncodeTableFile writes records as one Snappy Parquet data file of the Iceberg table.
func EncodeTableFile(recs []OutputRecord) ([]byte, error) {
	rows := make([]TableRecord, len(recs))
	for i := range recs {
		r := TableRecord(recs[i])
		r.ArrivalTime = r.ArrivalTime.UTC()
		rows[i] = r
	}
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[TableRecord](&buf, parquet.Compression(&snappy.Codec{}))
	if _, err := w.Write(rows); err != nil {
		return nil, fmt.Errorf("encode table data file: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode table data file: %w", err)
	}
	return buf.Bytes(), nil
}

// TableFileName names a data file after its first and last records:
// <stream>-<shardId>-<first seq>[-<sub>]_<last seq>[-<sub>].parquet. A replay of the same
// records rewrites the same name; a flush cut differently (a writer that did not know what the
// table holds) gets a name of its own and can never overwrite a committed file with other
// records.
func TableFileName(stream, shardID string, first, last *OutputRecord) string {
	end := last.SequenceNumber
	if last.SubSequenceNumber != 0 {
		end += "-" + fmt.Sprint(last.SubSequenceNumber)
	}
	return objectName(stream, shardID, first.SequenceNumber, first.SubSequenceNumber) + "_" + end + ".parquet"
}

func recordPos(r *OutputRecord) icetable.Position {
	return icetable.Position{Seq: r.SequenceNumber, Sub: r.SubSequenceNumber}
}

// tableFiles reads the shard's table position when not known yet, and builds the buffer's
// data files, one per hour partition, of the records after that position (the others are in
// the table already: a previous owner committed them and did not checkpoint). Each file is
// named after its first and last records (TableFileName).
func (p *processor) tableFiles() (objs []object, paths []string, ok bool) {
	if !p.table.known {
		var pos icetable.Position
		key := icetable.ShardKey{Stream: p.s.stream, Shard: p.shard}
		if p.retry(opTableRead, "", func(ctx context.Context) (err error) {
			pos, err = p.s.deps.Table.Position(ctx, key)
			return err
		}) != nil {
			return nil, nil, false
		}
		p.table = tableView{known: true, pos: pos, next: pos}
		p.log.Info("table position read", zap.String("table_position", pos.String()), zap.String("checkpoint", p.checkpoint))
	}
	recs := p.buf.recs
	if !p.table.pos.IsZero() {
		skip := 0
		for skip < len(recs) && recordPos(&recs[skip]).Compare(p.table.pos) <= 0 {
			skip++
		}
		if skip > 0 {
			p.log.Info("records already in the table left out", zap.Int("records", skip), zap.String("table_position", p.table.pos.String()))
			recs = recs[skip:]
		}
	}
	for _, part := range byHour(recs, func(r *OutputRecord) time.Time { return r.ArrivalTime }) {
		body, err := EncodeTableFile(part.items)
		if err != nil {
			p.log.Error("encode table data file", zap.Error(err))
			p.die("encode failed", err)
			return nil, nil, false
		}
		path := p.s.deps.Table.DataPath(part.hour, TableFileName(p.s.stream, p.shard, &part.items[0], &part.items[len(part.items)-1]))
		objs = append(objs, object{key: path, body: body, table: true})
		paths = append(paths, path)
	}
	return objs, paths, true
}

// pendingCommit is a flush whose data files are durable, waiting for its commit: the shard
// goes on taking and enriching records meanwhile, and its checkpoint moves when the commit
// lands (settle). Each flush's commit is asked for as soon as its files are written, without
// waiting for the flushes before it to land (the committer commits a shard's requests in
// order and folds those pending together into one snapshot): a shard adds to the table as
// fast as it flushes, and a flush at the end of a backlog does not wait behind the commit of
// the one before.
type pendingCommit struct {
	done    <-chan error
	cancel  context.CancelFunc
	cp      kcl.IRecordProcessorCheckpointer
	req     *icetable.Request // nil: every record of the flush was rejected, only its checkpoint waits
	last    string            // the checkpoint once it lands
	records int
	start   time.Time
}

// answered is the outcome channel of a request answered at once.
func answered(err error) <-chan error {
	done := make(chan error, 1)
	done <- err
	return done
}

// submit asks for the commit of the flush just written (its data files' paths, possibly none
// when every record of the window was rejected: then only its checkpoint waits, in order,
// behind the commits in flight), and resets the buffer: it is durable in object storage, not
// yet in the table, so nothing is checkpointed until its commit lands.
func (p *processor) submit(cp kcl.IRecordProcessorCheckpointer, paths []string, objects, bytesOut int, start time.Time) {
	m := p.s.deps.Metrics
	pc := &pendingCommit{cp: cp, cancel: func() {}, last: p.buf.last, records: len(p.buf.recs), start: start}
	if len(paths) == 0 {
		pc.done = answered(nil)
	} else {
		last := icetable.Position{Seq: p.buf.last, Sub: p.buf.lastSub}
		req := icetable.Request{Shard: icetable.ShardKey{Stream: p.s.stream, Shard: p.shard}, Files: paths,
			Prev: p.table.next, Last: last, Urgent: p.atTip}
		ctx, cancel := p.leaseContext()
		pc.req, pc.cancel = &req, cancel
		pc.done = p.s.deps.Table.Submit(ctx, req)
		p.table.next = last
	}
	p.pending = append(p.pending, pc)
	for _, e := range p.buf.errs {
		m.RecordsFailed.WithLabelValues(p.shard, string(e.Reason)).Inc()
	}
	m.FlushObjects.WithLabelValues(p.shard).Add(float64(objects))
	m.FlushBytes.WithLabelValues(p.shard).Add(float64(bytesOut))
	fields := []zap.Field{zap.String("seq_first", p.buf.first), zap.String("seq_last", p.buf.last),
		zap.Int("records", p.buf.n), zap.Int("rejected", len(p.buf.errs)), zap.Int("objects", objects), zap.Int("bytes", bytesOut),
		zap.Int("commits_in_flight", len(p.pending)), zap.Bool("at_tip", p.atTip), zap.Duration("duration", time.Since(start))}
	if len(paths) > 0 {
		fields = append(fields, zap.String("s3_key", paths[0]))
	}
	p.log.Info("flushed batch, commit asked", fields...)
	p.buf.reset()
	p.publishBuffered()
}

// settle's waits: only look, or wait for every commit asked for.
const (
	settleLook  time.Duration = 0
	settleBlock time.Duration = -1
)

// hurryAtTip is called on an empty read at the stream's tip: flushes made while the shard was
// behind (cut by flush.max_records) asked for their commit at the next commit_interval tick, to
// share it with the flushes coming after them; none is coming now, so they are committed after
// the gathering pause instead (within the committer's urgent budget). This takes up to a
// commit_interval off the end of a backlog's drain.
func (p *processor) hurryAtTip() {
	p.s.deps.Table.Hurry(icetable.ShardKey{Stream: p.s.stream, Shard: p.shard})
}

// settle moves the table output along: it takes the commits that landed, in order, and
// checkpoints after the last of them. wait says how long it waits for the commits asked for
// to land: settleLook only looks, settleBlock waits for every one (bounded by the lease and the
// drain deadline), a positive duration waits up to that long. It returns false when the
// processor died: the table's position moved underneath (another owner committed), or a
// commit's outcome is unknown (abandoned when the lease was about to go: it may still land, so
// the lease must expire rather than be released).
func (p *processor) settle(wait time.Duration) bool {
	var landed *pendingCommit
	records, flushes := 0, 0
	var failed error
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for len(p.pending) > 0 {
		pc := p.pending[0]
		var err error
		if wait == settleBlock {
			select {
			case err = <-pc.done:
			case <-p.s.ctx.Done():
				err = p.s.ctx.Err()
			}
		} else {
			got := false
			if timeout == nil {
				select {
				case err = <-pc.done:
					got = true
				default:
				}
			} else {
				select {
				case err = <-pc.done:
					got = true
				case <-timeout:
				case <-p.s.ctx.Done():
				}
			}
			if !got {
				break // still in flight, and so is every one after it
			}
		}
		pc.cancel()
		p.pending = p.pending[1:]
		if err != nil {
			failed = err
			break
		}
		if pc.req != nil {
			p.table.pos = pc.req.Last
		}
		landed = pc
		records += pc.records
		flushes++
		d := time.Since(pc.start)
		p.s.deps.Metrics.FlushDuration.WithLabelValues(p.shard).Observe(d.Seconds())
		files := 0
		if pc.req != nil {
			files = len(pc.req.Files)
		}
		p.log.Info("commit landed", zap.String("seq_last", pc.last), zap.Int("records", pc.records),
			zap.Int("files", files), zap.Duration("duration", d))
	}
	// What landed is checkpointed, also when a later commit failed: the next owner then reads
	// less again (the table's positions would leave those records out anyway).
	if landed != nil && !p.checkpointAt(landed.cp, landed.last, records, flushes) {
		p.abandonPending()
		return false
	}
	if failed == nil {
		return true
	}
	p.abandonPending()
	if errors.Is(failed, icetable.ErrPositionMoved) {
		p.log.Warn("table position moved underneath, processor stopped", zap.Error(failed))
		p.die("table position moved", failed)
		return false
	}
	p.writeAbandoned = true
	p.die("commit abandoned", failed)
	return false
}

// abandonPending gives up the commits still asked for (the processor is dying). One that a
// commit has already taken may still land, so the lease must then expire rather than be
// released: the table's positions stay the truth for the next owner either way.
func (p *processor) abandonPending() {
	for _, pc := range p.pending {
		pc.cancel()
		if pc.req != nil {
			p.writeAbandoned = true
		}
	}
	p.pending = nil
}
