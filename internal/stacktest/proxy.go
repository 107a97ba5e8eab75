package stacktest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a real service, for outage tests: Stop makes the service
// unreachable for whoever connects through the proxy (new connections are refused, open ones
// are cut), Drop makes it accept connections and close them at once, Start brings it back on
// the same address. The service itself keeps running, so other tests sharing it are
// unaffected.
type Proxy struct {
	t      testing.TB
	target string
	addr   string

	mu       sync.Mutex
	ln       net.Listener
	dropping bool
	conns    map[net.Conn]bool
}

// NewProxy listens on a free loopback port and forwards to target; it is stopped in Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Stop)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.addr }

// Stop refuses new connections and cuts the open ones.
func (p *Proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropping = false
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// Drop cuts the open connections and, from now until Start or Stop, accepts each new one and
// closes it before a byte is exchanged: a service that is restarting behind a load balancer
// or a port forward. Clients then see "unexpected EOF" or "connection reset", not "refused".
func (p *Proxy) Drop() {
	p.t.Helper()
	p.Stop()
	p.mu.Lock()
	p.dropping = true
	p.mu.Unlock()
	p.listen()
}

// Start forwards to the service again (listening again on the same address after Stop).
func (p *Proxy) Start() {
	p.t.Helper()
	p.mu.Lock()
	p.dropping = false
	listening := p.ln != nil
	p.mu.Unlock()
	if !listening {
		p.listen()
	}
}

func (p *Proxy) listen() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy relisten on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) pipe(c net.Conn) {
	p.mu.Lock()
	drop := p.dropping
	p.mu.Unlock()
	if drop {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c) || !p.track(up) {
		c.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}
