// Package faultproxy is a TCP proxy that tests put between a Caddy and
// Redis (the chaos run, one per instance; TestSlowRedis), to hurt that one
// link: added latency, connections
// dropped, or a partition (everything sent either way is lost, as on a
// network that went dark, so that the client times out rather than being
// told).
package faultproxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards the connections made to Addr to a target.
type Proxy struct {
	Addr   string
	target string
	ln     net.Listener

	partitioned atomic.Bool
	latency     atomic.Int64 // added to every chunk the client sends, in ns

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Start listens on a free loopback port and forwards to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

// Close stops listening and drops every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Drop()
}

// Partition loses everything sent either way while on is set.
func (p *Proxy) Partition(on bool) { p.partitioned.Store(on) }

// Delay holds every chunk the client sends for d before it is forwarded
// (0: none): a server that answers, but late.
func (p *Proxy) Delay(d time.Duration) { p.latency.Store(int64(d)) }

// Drop closes every connection now open.
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.pipe(c)
	}
}

func (p *Proxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		delete(p.conns, up)
		p.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() { p.forward(up, c, true); done <- struct{}{} }()
	go func() { p.forward(c, up, false); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

// forward copies from src to dst, chunk by chunk, as the faults say;
// delayed says it carries the client's bytes.
func (p *Proxy) forward(dst, src net.Conn, delayed bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.latency.Load()); delayed && d > 0 {
				time.Sleep(d)
			}
			if !p.partitioned.Load() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
