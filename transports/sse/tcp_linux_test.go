package sse

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/wire"
	"golang.org/x/sys/unix"
)

func TestTuneConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// As http.Server.ConnContext sees a connection of a TLS listener.
	tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
	ctx := ConnContext(wire.Config{Heartbeat: 2 * time.Second, WriteTimeout: 500 * time.Millisecond})(context.Background(), tc)
	if ctx == nil {
		t.Fatal("nil context")
	}
	raw, _ := c.(*net.TCPConn).SyscallConn()
	_ = raw.Control(func(fd uintptr) {
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 4500},
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 2},
			{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 2},
		} {
			if v, err := unix.GetsockoptInt(int(fd), o.level, o.opt); err != nil || v != o.want {
				t.Errorf("%s = %d, %v; want %d", o.name, v, err, o.want)
			}
		}
	})
}

// TestTCPUserTimeoutDetectsDeadPeer is the HTTP/1.1 dead-peer scenario,
// which loopback cannot play without packet loss: server and client run on
// the loopback of a network namespace of their own, whose every packet is
// then dropped (a pfifo qdisc of length 0; netem is not always built). The
// heartbeats stay unacknowledged and TCP_USER_TIMEOUT, set by ConnContext,
// makes the kernel give up: the server ends the connection.
func TestTCPUserTimeoutDetectsDeadPeer(t *testing.T) {
	ns := netns(t)
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	hub := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = hub.Close(); _ = b.Close() })
	cfg := wire.Config{
		Hub: hub, Heartbeat: 200 * time.Millisecond, WriteTimeout: 300 * time.Millisecond,
		Auth: wire.AuthFunc(func(*http.Request) (*notify.Grants, error) { return &notify.Grants{User: "alice"}, nil }),
	}

	var ln net.Listener
	if err := ns.do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	watch := &watchListener{Listener: ln}
	srv := &http.Server{Handler: NewHandler(cfg), ConnContext: ConnContext(cfg)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(watch)
	}()
	t.Cleanup(func() { _ = srv.Close(); <-served })

	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = ns.do(func() error { c, err = new(net.Dialer).DialContext(ctx, network, addr); return err })
		return c, err
	}}
	c := dial(t, "http://"+ln.Addr().String()+"/v1/sse", DialOptions{Token: "x", HTTPClient: &http.Client{Transport: tr}})
	if e := read(t, c); e.Type != notify.TypeSubscribed {
		t.Fatalf("got %s", e.JSON())
	}

	ns.run(t, "tc", "qdisc", "add", "dev", "lo", "root", "pfifo", "limit", "0")
	deadline := time.Now().Add(30 * time.Second)
	for hub.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server still serves a peer that has been silent for 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ok, errs := watch.timedOut(); !ok {
		t.Fatalf("the server's connection failed with %v; want ETIMEDOUT, the kernel giving up", errs)
	}
}

// namespace is a network namespace made for a test.
type namespace struct {
	name string
	file *os.File
}

// netns creates a network namespace with its loopback up, deleted when t
// ends. Creating one needs root (CAP_SYS_ADMIN) and iproute2.
func netns(t *testing.T) *namespace {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (iproute2)", tool)
		}
	}
	name := fmt.Sprintf("herald-sse-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	ns := &namespace{name: name}
	t.Cleanup(func() {
		if ns.file != nil {
			_ = ns.file.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns.run(t, "ip", "link", "set", "lo", "up")
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	ns.file = f
	return ns
}

// run runs a command in the namespace.
func (ns *namespace) run(t *testing.T, cmd ...string) {
	t.Helper()
	args := append([]string{"netns", "exec", ns.name}, cmd...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// do runs f on an OS thread moved into the namespace, so that the sockets
// f creates belong to it; they keep that namespace wherever they are used.
func (ns *namespace) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with this goroutine instead of
		// going back to the scheduler in another namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.file.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// watchListener records the I/O errors of its connections.
type watchListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error // guarded by mu
}

func (l *watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchConn{TCPConn: c.(*net.TCPConn), l: l}, nil
}

func (l *watchListener) failed(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

// timedOut reports whether the kernel gave up on a connection (ETIMEDOUT),
// and every error seen. Other errors can come first: net/http aborts its own
// background read (a deadline in the past) when a handler hijacks the
// connection.
func (l *watchListener) timedOut() (bool, []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		if errors.Is(err, syscall.ETIMEDOUT) {
			return true, l.errs
		}
	}
	return false, l.errs
}

// watchConn embeds *net.TCPConn so that TuneConn finds its methods.
type watchConn struct {
	*net.TCPConn
	l *watchListener
}

func (c *watchConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if err != nil {
		c.l.failed(err)
	}
	return n, err
}

func (c *watchConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	if err != nil {
		c.l.failed(err)
	}
	return n, err
}
