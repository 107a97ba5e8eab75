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
	Commit(ctx context.Context, r icetable.Request) error
}

// tableView is a processor's knowledge of its shard in the table.
type tableView struct {
	known bool
	// pos is the shard's last committed position: read from the table before the first
	// flush, then moved by this processor's own commits.
	pos icetable.Position
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
		p.table = tableView{known: true, pos: pos}
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

// pendingCommit is the commit in flight of one or more flushes whose data files are durable:
// the shard goes on taking and enriching records meanwhile, and its checkpoint moves when the
// commit lands (settle).
type pendingCommit struct {
	done    chan error
	cancel  context.CancelFunc
	cp      kcl.IRecordProcessorCheckpointer
	req     icetable.Request
	last    string // the checkpoint once it lands
	records int
	start   time.Time
}

// stagedFlushes are the flushes made durable while a commit was in flight: their data files
// are in object storage, and they go to the table together in the next commit, as soon as the
// one in flight lands. Without them a shard could add at most one flush window to the table
// per commit_interval, and could not keep up with 1 s windows at the default 5 s interval.
type stagedFlushes struct {
	cp      kcl.IRecordProcessorCheckpointer
	paths   []string
	last    icetable.Position // the last record of the last flush (a rejected one included)
	records int
	start   time.Time // when the first of them started
}

// stage adds the flush just written (its data files paths, possibly none when every record of
// the window was rejected) to the staged flushes, and resets the buffer: it is durable in
// object storage, not yet in the table, so nothing is checkpointed until its commit lands.
func (p *processor) stage(cp kcl.IRecordProcessorCheckpointer, paths []string, objects, bytesOut int, start time.Time) {
	m := p.s.deps.Metrics
	st := p.staged
	if st == nil {
		st = &stagedFlushes{start: start}
		p.staged = st
	}
	st.cp = cp
	st.paths = append(st.paths, paths...)
	st.last = icetable.Position{Seq: p.buf.last, Sub: p.buf.lastSub}
	st.records += len(p.buf.recs)
	for _, e := range p.buf.errs {
		m.RecordsFailed.WithLabelValues(p.shard, string(e.Reason)).Inc()
	}
	m.FlushObjects.WithLabelValues(p.shard).Add(float64(objects))
	m.FlushBytes.WithLabelValues(p.shard).Add(float64(bytesOut))
	fields := []zap.Field{zap.String("seq_first", p.buf.first), zap.String("seq_last", p.buf.last),
		zap.Int("records", p.buf.n), zap.Int("rejected", len(p.buf.errs)), zap.Int("objects", objects), zap.Int("bytes", bytesOut),
		zap.Int("staged_files", len(st.paths)), zap.Bool("commit_in_flight", p.pending != nil), zap.Duration("duration", time.Since(start))}
	if len(paths) > 0 {
		fields = append(fields, zap.String("s3_key", paths[0]))
	}
	p.log.Info("flushed batch", fields...)
	p.buf.reset()
	p.publishBuffered()
}

// submitStaged asks for the commit of the staged flushes without waiting for it; with no data
// file among them (every record rejected) there is nothing to commit, and the checkpoint
// moves at once. It returns false when the processor died.
func (p *processor) submitStaged() bool {
	st := p.staged
	if st == nil || p.pending != nil {
		return true
	}
	p.staged = nil
	if len(st.paths) == 0 {
		return p.checkpointAt(st.cp, st.last.Seq, st.records)
	}
	req := icetable.Request{Shard: icetable.ShardKey{Stream: p.s.stream, Shard: p.shard}, Files: st.paths,
		Prev: p.table.pos, Last: st.last}
	ctx, cancel := p.leaseContext()
	pc := &pendingCommit{done: make(chan error, 1), cancel: cancel, cp: st.cp, req: req, last: st.last.Seq, records: st.records, start: st.start}
	go func() { pc.done <- p.s.deps.Table.Commit(ctx, req) }()
	p.pending = pc
	p.log.Info("commit asked", zap.String("seq_last", st.last.Seq), zap.Int("files", len(st.paths)), zap.Int("records", st.records))
	return true
}

// settle moves the table output along: when the commit in flight has landed it checkpoints
// it, then asks for the commit of the flushes staged meanwhile. With block it waits until
// nothing is in flight and nothing is staged (bounded by the lease and the drain deadline);
// without, it only looks. It returns false when the processor died: the table's position
// moved underneath (another owner committed), or a commit's outcome is unknown (abandoned
// when the lease was about to go: it may still land, so the lease must expire rather than be
// released).
func (p *processor) settle(block bool) bool {
	for {
		if p.pending == nil && p.staged == nil {
			return true
		}
		landed, ok := p.settleOne(block)
		if !ok {
			return false
		}
		if !landed {
			return true // not blocking, and the commit is still in flight
		}
		if !p.submitStaged() {
			return false
		}
		if !block {
			return true
		}
	}
}

// settleOne checkpoints the commit in flight if it landed (waiting for it with block); landed
// reports whether nothing is in flight any more.
func (p *processor) settleOne(block bool) (landed, ok bool) {
	pc := p.pending
	if pc == nil {
		return true, true
	}
	var err error
	if block {
		select {
		case err = <-pc.done:
		case <-p.s.ctx.Done():
			err = p.s.ctx.Err()
		}
	} else {
		select {
		case err = <-pc.done:
		default:
			return false, true
		}
	}
	pc.cancel()
	p.pending = nil
	if err != nil {
		if errors.Is(err, icetable.ErrPositionMoved) {
			p.log.Warn("table position moved underneath, processor stopped", zap.Error(err))
			p.die("table position moved", err)
			return false, false
		}
		p.writeAbandoned = true
		p.die("commit abandoned", err)
		return false, false
	}
	p.table.pos = pc.req.Last
	if !p.checkpointAt(pc.cp, pc.last, pc.records) {
		return false, false
	}
	d := time.Since(pc.start)
	p.s.deps.Metrics.FlushDuration.WithLabelValues(p.shard).Observe(d.Seconds())
	p.log.Info("commit landed, checkpointed", zap.String("seq_last", pc.last), zap.Int("records", pc.records),
		zap.Int("files", len(pc.req.Files)), zap.Duration("duration", d))
	return true, true
}
