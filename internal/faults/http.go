// Package faults puts fault-injecting proxies in front of the local stack's services for soak
// and outage tests: an HTTP proxy for the AWS emulators (Kinesis, DynamoDB, S3) that answers
// with the real services' error shapes, drops connections, answers slowly, loses answers after
// the service acted, and refuses everything during blackouts; and a TCP proxy (PostgreSQL)
// that cuts connections and refuses them during blackouts.
//
// Decisions come from a seeded math/rand/v2 source, one draw per request under a lock, so a
// sequence of requests meets the same faults for the same seed; under concurrency the order in
// which requests arrive decides which one meets which fault, the rates and schedule do not
// change.
package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Service is the AWS service an HTTP proxy stands in front of: it decides the error shapes.
type Service string

// The services the HTTP proxy knows the error shapes of.
const (
	Kinesis  Service = "kinesis"
	DynamoDB Service = "dynamodb"
	S3       Service = "s3"
)

// Kind is one kind of fault.
type Kind string

// Fault kinds. Error answers exist for the services noted; the connection-level kinds (Reset,
// Slow, LostAnswer) apply to every service.
const (
	Throughput      Kind = "throughput_exceeded" // Kinesis, DynamoDB: 400 ProvisionedThroughputExceededException
	LimitExceeded   Kind = "limit_exceeded"      // Kinesis: 400 LimitExceededException
	ExpiredIterator Kind = "expired_iterator"    // Kinesis GetRecords only: 400 ExpiredIteratorException
	Throttling      Kind = "throttling"          // DynamoDB: 400 ThrottlingException
	Internal        Kind = "internal_error"      // all: 500 (InternalFailure, InternalServerError, InternalError)
	SlowDown        Kind = "slow_down"           // S3: 503 SlowDown
	Reset           Kind = "reset"               // connection reset before the request reaches the service
	Slow            Kind = "slow"                // the answer comes 0.2–2 s late
	LostAnswer      Kind = "lost_answer"         // the service acts, then the connection is reset instead of answering
	Blackout        Kind = "blackout"            // every request refused (connection reset) while it lasts
	Cut             Kind = "cut"                 // TCP proxy: every open connection closed at once
)

// Kinds returns the per-request fault kinds that service can answer with, in a fixed order.
func Kinds(s Service) []Kind {
	common := []Kind{Internal, Reset, Slow, LostAnswer}
	switch s {
	case Kinesis:
		return append([]Kind{Throughput, LimitExceeded, ExpiredIterator}, common...)
	case DynamoDB:
		return append([]Kind{Throughput, Throttling}, common...)
	case S3:
		return append([]Kind{SlowDown}, common...)
	}
	return common
}

// SlowMin and SlowMax bound the delay of a Slow answer.
const (
	SlowMin = 200 * time.Millisecond
	SlowMax = 2 * time.Second
)

// HTTPProxy is a reverse proxy in front of one AWS-compatible service. It forwards the
// request unchanged (the Host header too: it is part of the SigV4 signature).
type HTTPProxy struct {
	service Service
	target  *url.URL
	srv     *http.Server
	ln      net.Listener
	rp      *httputil.ReverseProxy
	tr      *http.Transport

	mu       sync.Mutex
	rng      *rand.Rand
	rates    map[Kind]float64
	next     []oneShot // faults for the next requests of an operation, first in first out
	blackout bool
	counts   map[Kind]int
	requests int
}

// NewHTTP listens on a free loopback port and forwards to target (an http URL). seed makes the
// fault draws reproducible. No fault is injected until SetRate or SetBlackout.
func NewHTTP(service Service, target string, seed uint64) (*HTTPProxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("faults: target must be an http URL, got %q", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faults: listen: %w", err)
	}
	p := &HTTPProxy{service: service, target: u, ln: ln,
		rng:    newRNG(seed, service),
		rates:  map[Kind]float64{},
		counts: map[Kind]int{},
		tr: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // signed by SigV4: must reach the service as the client sent it
		},
		Transport: p.tr,
		// The whole answer is read from the service before it is relayed: a client that goes
		// away mid-answer must not make the proxy close the service's connection mid-request.
		ModifyResponse: func(resp *http.Response) error {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("faults: read the service's answer: %w", err)
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return nil
		},
		// A failed forward is an answer the client must see as the service's failure.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// newRNG derives the proxy's source from the seed and the service, so that proxies of one
// seed in front of different services do not draw the same sequence.
func newRNG(seed uint64, s Service) *rand.Rand {
	var h uint64 = 0xcbf29ce484222325
	for _, b := range []byte(s) {
		h = (h ^ uint64(b)) * 0x100000001b3
	}
	return rand.New(rand.NewPCG(seed, h))
}

// URL is the proxy's endpoint, e.g. http://127.0.0.1:41234.
func (p *HTTPProxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy and cuts open connections.
func (p *HTTPProxy) Close() error {
	err := p.srv.Close()
	p.tr.CloseIdleConnections()
	return err
}

// SetRate sets the share (0..1) of requests that meet fault kind k; 0 turns it off. Rates of
// all kinds together are capped at 1 (a request meets at most one fault).
func (p *HTTPProxy) SetRate(k Kind, rate float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rate <= 0 {
		delete(p.rates, k)
		return
	}
	p.rates[k] = min(rate, 1)
}

// oneShot is a fault queued by Next.
type oneShot struct {
	kind Kind
	op   string
}

// Next makes the next request of operation op (the X-Amz-Target operation, e.g. "UpdateItem";
// "" for any request) meet fault k, once: for tests of one precise failure, such as the lost
// answer of one conditional write. Queued faults come before the rates.
func (p *HTTPProxy) Next(k Kind, op string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next = append(p.next, oneShot{k, op})
}

// ClearRates turns every per-request fault off, queued ones (Next) included.
func (p *HTTPProxy) ClearRates() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rates = map[Kind]float64{}
	p.next = nil
}

// SetBlackout refuses every request (on) or lets them through again (off).
func (p *HTTPProxy) SetBlackout(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackout = on
}

// Counts returns how many requests met each fault kind so far, and the requests seen.
func (p *HTTPProxy) Counts() (map[Kind]int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Kind]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out, p.requests
}

// draw picks this request's fault ("" for none) and, for Slow, its delay.
func (p *HTTPProxy) draw(op string) (Kind, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if p.blackout {
		p.counts[Blackout]++
		return Blackout, 0
	}
	for i, o := range p.next {
		if o.op == "" || o.op == op {
			p.next = append(p.next[:i], p.next[i+1:]...)
			p.counts[o.kind]++
			return o.kind, SlowMin
		}
	}
	kinds := make([]Kind, 0, len(p.rates))
	for k := range p.rates {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] }) // map order is random
	x := p.rng.Float64()
	var delay time.Duration
	if len(kinds) > 0 {
		delay = SlowMin + time.Duration(p.rng.Int64N(int64(SlowMax-SlowMin)))
	}
	acc := 0.0
	for _, k := range kinds {
		acc += p.rates[k]
		if x >= acc {
			continue
		}
		if !p.applies(k, op) {
			return "", 0
		}
		p.counts[k]++
		return k, delay
	}
	return "", 0
}

// applies reports whether the service can answer op with k (an expired iterator only comes
// back from GetRecords; error shapes only from the services that have them).
func (p *HTTPProxy) applies(k Kind, op string) bool {
	switch k {
	case Reset, Slow, LostAnswer, Internal:
		return true
	case ExpiredIterator:
		return p.service == Kinesis && op == "GetRecords"
	case Throughput:
		return p.service == Kinesis || p.service == DynamoDB
	case LimitExceeded:
		return p.service == Kinesis
	case Throttling:
		return p.service == DynamoDB
	case SlowDown:
		return p.service == S3
	}
	return false
}

// operation is the JSON protocol's operation name (X-Amz-Target "Kinesis_20131202.GetRecords"
// → "GetRecords"); "" for S3.
func operation(r *http.Request) string {
	t := r.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		return t[i+1:]
	}
	return t
}

// detach reads the whole request body and returns the request with a context that a client
// going away does not cancel. The service then receives either the whole request or nothing,
// and answers it even if the client has gone: as a real service does, and as the emulators
// need (dynalite exits on a request aborted mid-way).
func detach(r *http.Request) (*http.Request, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, false // the client went away mid-request: the service never sees it
	}
	out := r.WithContext(context.WithoutCancel(r.Context()))
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.ContentLength = int64(len(body))
	return out, true
}

func (p *HTTPProxy) serve(w http.ResponseWriter, r *http.Request) {
	kind, delay := p.draw(operation(r))
	switch kind {
	case "", Slow, LostAnswer:
		var ok bool
		if r, ok = detach(r); !ok {
			return
		}
	}
	switch kind {
	case "":
		p.rp.ServeHTTP(w, r)
	case Slow:
		time.Sleep(delay) // the fault itself: the answer is late
		p.rp.ServeHTTP(w, r)
	case Reset, Blackout:
		reset(w)
	case LostAnswer:
		p.forwardThenDrop(w, r)
	default:
		_, _ = io.Copy(io.Discard, r.Body) // as the service would: the request was read
		writeError(w, p.service, kind)
	}
}

// forwardThenDrop sends the request to the service, reads its whole answer (so the service
// has acted), and resets the client's connection instead of answering.
func (p *HTTPProxy) forwardThenDrop(w http.ResponseWriter, r *http.Request) {
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.RequestURI = ""
	out.Host = r.Host
	out.Header.Del("Connection")
	resp, err := p.tr.RoundTrip(out)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	reset(w)
}

// reset closes the client's connection with a TCP RST, without an answer.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok { // HTTP/2 cannot be hijacked; the proxy only serves HTTP/1.1
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// errorShape is one service's answer for one fault kind, as the real service sends it.
type errorShape struct {
	status int
	code   string
	msg    string
}

func shapeOf(s Service, k Kind) errorShape {
	switch s {
	case Kinesis:
		switch k {
		case Throughput:
			return errorShape{400, "ProvisionedThroughputExceededException", "Rate exceeded for shard shardId-000000000000 in stream under account 000000000000."}
		case LimitExceeded:
			return errorShape{400, "LimitExceededException", "Rate exceeded for stream under account 000000000000."}
		case ExpiredIterator:
			return errorShape{400, "ExpiredIteratorException", "Iterator expired. The iterator was created at time and is now expired."}
		}
		return errorShape{500, "InternalFailure", "Internal service failure."}
	case DynamoDB:
		switch k {
		case Throughput:
			return errorShape{400, "ProvisionedThroughputExceededException", "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}
		case Throttling:
			return errorShape{400, "ThrottlingException", "Rate of requests exceeds the allowed throughput."}
		}
		return errorShape{500, "InternalServerError", "Internal server error"}
	}
	if k == SlowDown {
		return errorShape{503, "SlowDown", "Please reduce your request rate."}
	}
	return errorShape{500, "InternalError", "We encountered an internal error. Please try again."}
}

// writeError answers with the service's error: the JSON protocols' body with "__type" (and
// the x-amzn-ErrorType header the SDK reads first) for Kinesis and DynamoDB, the REST-XML
// <Error> document for S3.
func writeError(w http.ResponseWriter, s Service, k Kind) {
	sh := shapeOf(s, k)
	reqID := fmt.Sprintf("faults-%d", time.Now().UnixNano())
	switch s {
	case Kinesis, DynamoDB:
		ns, ct := "Kinesis_20131202", "application/x-amz-json-1.1"
		if s == DynamoDB {
			ns, ct = "com.amazonaws.dynamodb.v20120810", "application/x-amz-json-1.0"
		}
		body := fmt.Sprintf(`{"__type":"%s#%s","message":%q}`, ns, sh.code, sh.msg)
		w.Header().Set("Content-Type", ct)
		w.Header().Set("X-Amzn-Requestid", reqID)
		w.Header().Set("X-Amzn-Errortype", sh.code+":")
		if s == DynamoDB {
			// DynamoDB signs every answer's body with a CRC32 the SDK checks.
			w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(body))), 10))
		}
		w.WriteHeader(sh.status)
		_, _ = io.WriteString(w, body)
	default:
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("X-Amz-Request-Id", reqID)
		w.WriteHeader(sh.status)
		_, _ = fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<Error><Code>%s</Code><Message>%s</Message><RequestId>%s</RequestId><HostId>faults</HostId></Error>`, sh.code, sh.msg, reqID)
	}
}

// ErrClosed is returned by a TCPProxy's methods after Close.
var ErrClosed = errors.New("faults: proxy closed")

// TCPProxy forwards TCP connections to a service (PostgreSQL) and can cut every open
// connection at once or refuse every connection for a while (a blackout: new connections are
// accepted and reset at once, so clients fail fast as on a refused port).
type TCPProxy struct {
	target string
	ln     net.Listener

	mu       sync.Mutex
	conns    map[net.Conn]bool
	blackout bool
	closed   bool
	counts   map[Kind]int
}

// NewTCP listens on a free loopback port and forwards to target (host:port).
func NewTCP(target string) (*TCPProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faults: listen: %w", err)
	}
	p := &TCPProxy{target: target, ln: ln, conns: map[net.Conn]bool{}, counts: map[Kind]int{}}
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every open connection (both sides); new ones are accepted as before.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[Cut]++
	p.cutLocked()
}

func (p *TCPProxy) cutLocked() {
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// SetBlackout cuts every open connection and refuses new ones (on), or accepts them again (off).
func (p *TCPProxy) SetBlackout(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on && !p.blackout {
		p.counts[Blackout]++
		p.cutLocked()
	}
	p.blackout = on
}

// Counts returns how many cuts and blackouts happened.
func (p *TCPProxy) Counts() map[Kind]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Kind]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Close stops accepting and cuts every connection.
func (p *TCPProxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	p.closed = true
	p.cutLocked()
	return p.ln.Close()
}

func (p *TCPProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.pipe(c)
	}
}

// track registers c unless the proxy is blacked out or closed.
func (p *TCPProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackout || p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *TCPProxy) pipe(c net.Conn) {
	p.mu.Lock()
	refused := p.blackout || p.closed
	p.mu.Unlock()
	if refused {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	up, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		_ = c.Close()
		_ = up.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}
