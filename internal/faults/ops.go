package faults

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// OpProxy is an HTTP fault proxy whose faults hit named operations only: "5 % of GetRecords
// throttled" leaves GetShardIterator, ListShards and the lease table alone, and "5 % of
// PutObject answered SlowDown" leaves the reads of the same bucket alone. HTTPProxy's rates
// apply to every operation the fault kind can answer.
//
// Each request of an operation with rates draws once from a seeded source under a lock, so a
// sequence of an operation's requests meets the same faults for the same seed, whatever the
// other operations do in between. Requests that meet no fault are forwarded as HTTPProxy
// forwards them (whole request, whole answer, Host header unchanged).
type OpProxy struct {
	service Service
	fwd     *HTTPProxy // forwards and answers; it has no rates of its own
	ln      net.Listener
	srv     *http.Server

	mu       sync.Mutex
	rng      *rand.Rand
	rates    map[string]map[Kind]float64 // operation → kind → share
	faults   map[OpFault]int
	requests map[string]int
}

// OpFault names a fault kind met by one operation, for Counts.
type OpFault struct {
	Op   string
	Kind Kind
}

func (f OpFault) String() string { return f.Op + ":" + string(f.Kind) }

// NewOpHTTP listens on a free loopback port and forwards to target (an http URL). seed makes
// the draws reproducible. No fault is injected until SetRate.
func NewOpHTTP(service Service, target string, seed uint64) (*OpProxy, error) {
	fwd, err := NewHTTP(service, target, seed)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = fwd.Close()
		return nil, fmt.Errorf("faults: listen: %w", err)
	}
	p := &OpProxy{service: service, fwd: fwd, ln: ln,
		// Not the forwarder's sequence: an OpProxy and an HTTPProxy of one seed draw apart.
		rng:   newRNG(seed, service+"/ops"),
		rates: map[string]map[Kind]float64{}, faults: map[OpFault]int{}, requests: map[string]int{},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL is the proxy's endpoint, e.g. http://127.0.0.1:41234.
func (p *OpProxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy and cuts open connections.
func (p *OpProxy) Close() error {
	err := p.srv.Close()
	if ferr := p.fwd.Close(); err == nil {
		err = ferr
	}
	return err
}

// SetRate sets the share (0..1) of op's requests that meet fault kind k; 0 turns it off. op is
// the operation name as Operation returns it ("GetRecords", "PutObject"). The rates of one
// operation together are capped at 1. It is an error to ask for an answer the service cannot
// give to op (ThrottlingException from Kinesis, an expired iterator from ListShards).
func (p *OpProxy) SetRate(op string, k Kind, rate float64) error {
	if op == "" {
		return fmt.Errorf("faults: SetRate needs an operation name")
	}
	if !p.fwd.applies(k, op) {
		return fmt.Errorf("faults: %s cannot answer %s with %s", p.service, op, k)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if rate <= 0 {
		delete(p.rates[op], k)
		return nil
	}
	if p.rates[op] == nil {
		p.rates[op] = map[Kind]float64{}
	}
	p.rates[op][k] = min(rate, 1)
	return nil
}

// Counts returns the faults met so far per operation and kind, and the requests seen per
// operation (those that met a fault included).
func (p *OpProxy) Counts() (map[OpFault]int, map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := make(map[OpFault]int, len(p.faults))
	for k, v := range p.faults {
		f[k] = v
	}
	r := make(map[string]int, len(p.requests))
	for k, v := range p.requests {
		r[k] = v
	}
	return f, r
}

// draw picks this request's fault ("" for none) and, for Slow, its delay.
func (p *OpProxy) draw(op string) (Kind, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests[op]++
	rates := p.rates[op]
	if len(rates) == 0 {
		return "", 0 // no draw: another operation's traffic does not shift this one's faults
	}
	kinds := make([]Kind, 0, len(rates))
	for k := range rates {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] }) // map order is random
	x := p.rng.Float64()
	delay := SlowMin + time.Duration(p.rng.Int64N(int64(SlowMax-SlowMin)))
	acc := 0.0
	for _, k := range kinds {
		acc += rates[k]
		if x < acc {
			p.faults[OpFault{op, k}]++
			return k, delay
		}
	}
	return "", 0
}

func (p *OpProxy) serve(w http.ResponseWriter, r *http.Request) {
	kind, delay := p.draw(Operation(p.service, r))
	switch kind {
	case "":
		p.fwd.serve(w, r) // the forwarder has no rates: it forwards
	case Slow:
		time.Sleep(delay) // the fault itself: the answer is late
		p.fwd.serve(w, r)
	case Reset:
		reset(w)
	case LostAnswer:
		if r, ok := detach(r); ok {
			p.fwd.forwardThenDrop(w, r)
		}
	default:
		_, _ = io.Copy(io.Discard, r.Body) // as the service would: the request was read
		writeError(w, p.service, kind)
	}
}

// Operation names the API operation of a request to service: the X-Amz-Target operation of the
// JSON protocols (Kinesis, DynamoDB: "GetRecords"), and for S3 the x-id query parameter the
// SDK sends ("PutObject"), else the operation the method, path and query of a path-style
// request stand for ("" when unknown).
func Operation(service Service, r *http.Request) string {
	if service != S3 {
		return operation(r)
	}
	q := r.URL.Query()
	if id := q.Get("x-id"); id != "" {
		return id
	}
	// Path-style: /bucket or /bucket/key (the proxy is addressed by IP, never by bucket host).
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(path, "/")
	has := func(k string) bool { _, ok := q[k]; return ok }
	switch {
	case bucket == "":
		if r.Method == http.MethodGet {
			return "ListBuckets"
		}
	case key == "":
		switch r.Method {
		case http.MethodGet:
			switch {
			case has("uploads"):
				return "ListMultipartUploads"
			case has("location"):
				return "GetBucketLocation"
			case q.Get("list-type") == "2":
				return "ListObjectsV2"
			case len(q) == 0 || has("prefix") || has("marker") || has("delimiter") || has("max-keys"):
				return "ListObjects"
			}
		case http.MethodHead:
			return "HeadBucket"
		case http.MethodPut:
			if len(q) == 0 {
				return "CreateBucket"
			}
		case http.MethodDelete:
			if len(q) == 0 {
				return "DeleteBucket"
			}
		case http.MethodPost:
			if has("delete") {
				return "DeleteObjects"
			}
		}
	default:
		switch r.Method {
		case http.MethodGet:
			if len(q) == 0 || has("partNumber") || has("versionId") {
				return "GetObject"
			}
		case http.MethodHead:
			return "HeadObject"
		case http.MethodPut:
			copied := r.Header.Get("X-Amz-Copy-Source") != ""
			switch {
			case has("uploadId") && copied:
				return "UploadPartCopy"
			case has("uploadId"):
				return "UploadPart"
			case len(q) == 0 && copied:
				return "CopyObject"
			case len(q) == 0:
				return "PutObject"
			}
		case http.MethodPost:
			switch {
			case has("uploads"):
				return "CreateMultipartUpload"
			case has("uploadId"):
				return "CompleteMultipartUpload"
			}
		case http.MethodDelete:
			if has("uploadId") {
				return "AbortMultipartUpload"
			}
			if len(q) == 0 || has("versionId") {
				return "DeleteObject"
			}
		}
	}
	return ""
}
