package leasesim

import (
	"context"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// Stream is an in-memory Kinesis stream: shards with records kept forever, sequence numbers
// that grow across the stream, and resharding (Split, Merge) that closes parents and opens
// children the way Kinesis lists them.
type Stream struct {
	name string

	mu      sync.Mutex
	shards  []*shard // in creation order (ListShards order)
	byID    map[string]*shard
	nextSeq int64
	nextID  int
	calls   map[string]int64
	latency time.Duration // of every GetRecords answer (see SetReadLatency)
	// Reads observes every GetRecords answer (tests measure silence and re-reads with it).
	onRead func(reader, shardID string, recs []ktypes.Record)
	// gen makes the virtual records of a backlog (see Backlog); genAt is their arrival time.
	gen   func(shard, i int) []byte
	genAt time.Time
}

type shard struct {
	id       string
	parents  []string
	startSeq string
	endSeq   string // set when closed
	lo, hi   *big.Int
	index    int // creation order
	virtual  int // records 0..virtual-1 are made on demand (Backlog); recs follow them
	recs     []ktypes.Record
}

// count is the number of records the shard holds, virtual ones included.
func (s *shard) count() int { return s.virtual + len(s.recs) }

// virtualSeq is the sequence number of virtual record i of shard index k: "48…" sorts before
// every stored record's "49…", of the same length.
func virtualSeq(k, i int) string { return fmt.Sprintf("48%04d%024d", k, i) }

// seqAt is the sequence number of the record at pos.
func (s *shard) seqAt(pos int) string {
	if pos < s.virtual {
		return virtualSeq(s.index, pos)
	}
	return aws.ToString(s.recs[pos-s.virtual].SequenceNumber)
}

func (s *shard) closed() bool { return s.endSeq != "" }

// maxHash is the top of Kinesis's 128-bit hash key space.
var maxHash = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))

// NewStream returns a stream of n open shards splitting the hash key space evenly.
func NewStream(name string, n int) *Stream {
	s := &Stream{name: name, byID: map[string]*shard{}, calls: map[string]int64{}}
	step := new(big.Int).Div(maxHash, big.NewInt(int64(n)))
	for i := 0; i < n; i++ {
		lo := new(big.Int).Mul(step, big.NewInt(int64(i)))
		hi := new(big.Int).Sub(new(big.Int).Add(lo, step), big.NewInt(1))
		if i == n-1 {
			hi = maxHash
		}
		s.addLocked(nil, lo, hi)
	}
	return s
}

// OnRead sets a hook called (under the stream's lock, keep it short) with every GetRecords
// answer: reader is the client's name.
func (s *Stream) OnRead(f func(reader, shardID string, recs []ktypes.Record)) {
	s.mu.Lock()
	s.onRead = f
	s.mu.Unlock()
}

func (s *Stream) seqLocked() string {
	s.nextSeq++
	return fmt.Sprintf("49%028d", s.nextSeq)
}

func (s *Stream) addLocked(parents []string, lo, hi *big.Int) *shard {
	sh := &shard{id: fmt.Sprintf("shardId-%012d", s.nextID), parents: parents, lo: lo, hi: hi, index: s.nextID}
	s.nextID++
	sh.startSeq = fmt.Sprintf("49%028d", s.nextSeq+1)
	s.shards = append(s.shards, sh)
	s.byID[sh.id] = sh
	return sh
}

// OpenShards returns the ids of the open shards, in creation order.
func (s *Stream) OpenShards() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sh := range s.shards {
		if !sh.closed() {
			out = append(out, sh.id)
		}
	}
	return out
}

// SetReadLatency makes every GetRecords answer take d (Kinesis answers in tens of
// milliseconds). Under a virtual clock it matters: vmware-go-kcl-v2 v1.0.0 spins without
// sleeping when a shard's sixth GetRecords of a second falls exactly one second after its
// first (its rate limiter tests "> 1s", and its own wait ends exactly then), which only an
// exact clock produces; a round trip of 100 ms keeps a shard at five reads a second or fewer.
func (s *Stream) SetReadLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// Backlog gives every open shard that holds no record yet n records made on demand by gen
// (shard creation index, record index), all arriving at at. Nothing of them is stored: a
// benchmark that measures a worker's memory can run the stream in the worker's process.
func (s *Stream) Backlog(n int, at time.Time, gen func(shard, i int) []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen, s.genAt = gen, at
	for _, sh := range s.shards {
		if !sh.closed() && sh.count() == 0 {
			sh.virtual = n
		}
	}
}

// recordLocked is the record at pos of sh (made now if virtual).
func (s *Stream) recordLocked(sh *shard, pos int) ktypes.Record {
	if pos < sh.virtual {
		return ktypes.Record{SequenceNumber: aws.String(virtualSeq(sh.index, pos)), PartitionKey: aws.String("backlog"),
			Data: s.gen(sh.index, pos), ApproximateArrivalTimestamp: aws.Time(s.genAt)}
	}
	return sh.recs[pos-sh.virtual]
}

// Put appends one record to shard id, arriving at at, and returns its sequence number.
func (s *Stream) Put(id, partitionKey string, data []byte, at time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.byID[id]
	if !ok || sh.closed() {
		return "", fmt.Errorf("leasesim: shard %s is not open", id)
	}
	seq := s.seqLocked()
	sh.recs = append(sh.recs, ktypes.Record{SequenceNumber: aws.String(seq), PartitionKey: aws.String(partitionKey), Data: data,
		ApproximateArrivalTimestamp: aws.Time(at)})
	return seq, nil
}

// Split closes open shard id and opens two children, each with half its hash range.
func (s *Stream) Split(id string) ([2]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.byID[id]
	if !ok || sh.closed() {
		return [2]string{}, fmt.Errorf("leasesim: shard %s is not open", id)
	}
	sh.endSeq = s.seqLocked()
	mid := new(big.Int).Rsh(new(big.Int).Add(sh.lo, sh.hi), 1)
	a := s.addLocked([]string{id}, sh.lo, mid)
	b := s.addLocked([]string{id}, new(big.Int).Add(mid, big.NewInt(1)), sh.hi)
	return [2]string{a.id, b.id}, nil
}

// Merge closes two adjacent open shards and opens their child.
func (s *Stream) Merge(id, adjacent string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, okA := s.byID[id]
	b, okB := s.byID[adjacent]
	if !okA || !okB || a.closed() || b.closed() {
		return "", fmt.Errorf("leasesim: shards %s and %s must both be open", id, adjacent)
	}
	a.endSeq, b.endSeq = s.seqLocked(), s.seqLocked()
	lo, hi := a.lo, b.hi
	if b.lo.Cmp(a.lo) < 0 {
		lo, hi = b.lo, a.hi
	}
	return s.addLocked([]string{id, adjacent}, lo, hi).id, nil
}

// Calls returns the number of requests per Kinesis operation so far.
func (s *Stream) Calls() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// Client returns a Kinesis client named reader whose every call is answered by s; now is the
// clock for MillisBehindLatest (pass time.Now inside a synctest bubble). link may be nil.
func (s *Stream) Client(reader string, link *Link, now func() time.Time) *kinesis.Client {
	return kinesis.New(kinesis.Options{Region: "us-east-1", APIOptions: []func(*middleware.Stack) error{
		func(st *middleware.Stack) error {
			return st.Serialize.Add(middleware.SerializeMiddlewareFunc("leasesimKinesis",
				func(ctx context.Context, in middleware.SerializeInput, _ middleware.SerializeHandler) (middleware.SerializeOutput, middleware.Metadata, error) {
					if link != nil && link.cut.Load() {
						return middleware.SerializeOutput{}, middleware.Metadata{}, errCut
					}
					if err := ctx.Err(); err != nil {
						return middleware.SerializeOutput{}, middleware.Metadata{}, err
					}
					if _, ok := in.Parameters.(*kinesis.GetRecordsInput); ok {
						s.mu.Lock()
						d := s.latency
						s.mu.Unlock()
						if d > 0 {
							time.Sleep(d)
						}
					}
					out, err := s.serve(reader, in.Parameters, now())
					return middleware.SerializeOutput{Result: out}, middleware.Metadata{}, err
				}), middleware.Before)
		}}})
}

func kinvalid(format string, args ...any) error {
	return &ktypes.InvalidArgumentException{Message: aws.String(fmt.Sprintf(format, args...))}
}

// listPage is the most shards one ListShards answer holds.
const listPage = 1000

func (s *Stream) serve(reader string, params any, now time.Time) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch p := params.(type) {
	case *kinesis.ListShardsInput:
		s.calls["ListShards"]++
		start := 0
		if p.NextToken != nil {
			n, err := strconv.Atoi(strings.TrimPrefix(aws.ToString(p.NextToken), "leasesim-"))
			if err != nil {
				return nil, kinvalid("bad NextToken")
			}
			start = n
		} else if aws.ToString(p.StreamName) != s.name {
			return nil, &ktypes.ResourceNotFoundException{Message: aws.String("Stream " + aws.ToString(p.StreamName) + " not found")}
		}
		limit := listPage
		if p.MaxResults != nil {
			limit = int(*p.MaxResults)
		}
		out := &kinesis.ListShardsOutput{}
		end := min(len(s.shards), start+limit)
		for _, sh := range s.shards[start:end] {
			ks := ktypes.Shard{ShardId: aws.String(sh.id), HashKeyRange: &ktypes.HashKeyRange{
				StartingHashKey: aws.String(sh.lo.String()), EndingHashKey: aws.String(sh.hi.String())},
				SequenceNumberRange: &ktypes.SequenceNumberRange{StartingSequenceNumber: aws.String(sh.startSeq)}}
			if sh.closed() {
				ks.SequenceNumberRange.EndingSequenceNumber = aws.String(sh.endSeq)
			}
			if len(sh.parents) > 0 {
				ks.ParentShardId = aws.String(sh.parents[0])
			}
			if len(sh.parents) > 1 {
				ks.AdjacentParentShardId = aws.String(sh.parents[1])
			}
			out.Shards = append(out.Shards, ks)
		}
		if end < len(s.shards) {
			out.NextToken = aws.String(fmt.Sprintf("leasesim-%d", end))
		}
		return out, nil
	case *kinesis.GetShardIteratorInput:
		s.calls["GetShardIterator"]++
		sh, ok := s.byID[aws.ToString(p.ShardId)]
		if !ok || aws.ToString(p.StreamName) != s.name {
			return nil, &ktypes.ResourceNotFoundException{Message: aws.String("shard not found")}
		}
		pos := 0
		seqAt := func(seq string) int {
			return sort.Search(sh.count(), func(i int) bool { return sh.seqAt(i) >= seq })
		}
		switch p.ShardIteratorType {
		case ktypes.ShardIteratorTypeTrimHorizon:
		case ktypes.ShardIteratorTypeLatest:
			pos = sh.count()
		case ktypes.ShardIteratorTypeAtSequenceNumber:
			pos = seqAt(aws.ToString(p.StartingSequenceNumber))
		case ktypes.ShardIteratorTypeAfterSequenceNumber:
			pos = seqAt(aws.ToString(p.StartingSequenceNumber))
			if pos < sh.count() && sh.seqAt(pos) == aws.ToString(p.StartingSequenceNumber) {
				pos++
			}
		case ktypes.ShardIteratorTypeAtTimestamp:
			ts := aws.ToTime(p.Timestamp)
			pos = sort.Search(sh.count(), func(i int) bool { return !s.recordLocked(sh, i).ApproximateArrivalTimestamp.Before(ts) })
		default:
			return nil, kinvalid("unsupported iterator type %q", p.ShardIteratorType)
		}
		return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String(fmt.Sprintf("%s/%d", sh.id, pos))}, nil
	case *kinesis.GetRecordsInput:
		s.calls["GetRecords"]++
		id, n, ok := strings.Cut(aws.ToString(p.ShardIterator), "/")
		sh, found := s.byID[id]
		pos, err := strconv.Atoi(n)
		if !ok || !found || err != nil || pos > sh.count() {
			return nil, kinvalid("invalid shard iterator")
		}
		limit := 10000
		if p.Limit != nil {
			limit = int(*p.Limit)
		}
		end, bytes := pos, 0
		var recs []ktypes.Record
		for end < sh.count() && end-pos < limit && bytes < 10<<20 {
			r := s.recordLocked(sh, end)
			recs = append(recs, r)
			bytes += len(r.Data)
			end++
		}
		out := &kinesis.GetRecordsOutput{Records: recs, MillisBehindLatest: aws.Int64(0)}
		if end < sh.count() {
			out.MillisBehindLatest = aws.Int64(max(0, now.Sub(*s.recordLocked(sh, end).ApproximateArrivalTimestamp).Milliseconds()))
		}
		if !(sh.closed() && end == sh.count()) {
			out.NextShardIterator = aws.String(fmt.Sprintf("%s/%d", sh.id, end))
		}
		if s.onRead != nil {
			s.onRead(reader, sh.id, out.Records)
		}
		return out, nil
	case *kinesis.DescribeStreamSummaryInput:
		s.calls["DescribeStreamSummary"]++
		open := 0
		for _, sh := range s.shards {
			if !sh.closed() {
				open++
			}
		}
		return &kinesis.DescribeStreamSummaryOutput{StreamDescriptionSummary: &ktypes.StreamDescriptionSummary{
			StreamName: aws.String(s.name), StreamStatus: ktypes.StreamStatusActive, OpenShardCount: aws.Int32(int32(open)),
			StreamARN: aws.String("arn:aws:kinesis:us-east-1:000000000000:stream/" + s.name)}}, nil
	}
	return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: fmt.Sprintf("leasesim: operation %T is not simulated", params)}
}
