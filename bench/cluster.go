package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// process is a child process owned by the bench.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and was waited for
}

// startProcess starts argv, pinned to the CPU list cpus when it is set
// (through taskset, so that every thread inherits it from the start), with
// its output appended to logPath.
func startProcess(name, logPath, cpus string, argv []string, stderr io.Writer) (*process, error) {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = log
	cmd.Stderr = log
	if stderr != nil {
		cmd.Stderr = stderr
	}
	// Should the bench die without tearing down, its children die too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL (after SIGCONT, so that a stopped process dies too)
// and waits for the exit. Idempotent.
func (p *process) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// clusterConfig describes the children to start.
type clusterConfig struct {
	Dir        string   // logs and Redis data
	CertDir    string   // the development certificate shared by every instance
	Serve      []string // argv that runs `herald serve` (before its flags)
	Instances  int
	ServerCPUs string // taskset CPU list for every child; empty: not pinned
	Persistent bool   // Redis with appendonly yes, appendfsync always
	ServeArgs  []string
}

// cluster is a private redis-server and Herald instances, all children of
// the bench.
type cluster struct {
	cfg       clusterConfig
	secret    string
	apiKey    string
	redisPort int
	redisDir  string
	redis     *process // guarded by mu
	instances []*instance
	mu        sync.Mutex
	// route maps dialed addresses to live instances once some died.
	route atomic.Pointer[func(addr string, i int) string]
	// fault makes a fault happen once when transports run concurrently
	// (--quick) on the same cluster.
	fault sync.Once
}

// instance is one `herald serve` child.
type instance struct {
	*process
	plainURL string // http://127.0.0.1:port
	tlsURL   string // https://127.0.0.1:port
}

func startCluster(ctx context.Context, cfg clusterConfig, secret, apiKey string) (_ *cluster, err error) {
	c := &cluster{cfg: cfg, secret: secret, apiKey: apiKey, redisDir: filepath.Join(cfg.Dir, "redis")}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if err := os.MkdirAll(c.redisDir, 0o755); err != nil {
		return nil, err
	}
	if c.redisPort, err = freePort(); err != nil {
		return nil, err
	}
	if err := c.startRedis(ctx); err != nil {
		return nil, err
	}
	for i := range cfg.Instances {
		// herald serve binds UDP on the port number the kernel gave its TLS
		// TCP listener: now and then a client's UDP socket holds it. Retry.
		var in *instance
		for attempt := 0; attempt < 5; attempt++ {
			if in, err = c.startInstance(ctx, i); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		c.instances = append(c.instances, in)
	}
	return c, nil
}

func (c *cluster) redisURL() string { return "redis://127.0.0.1:" + strconv.Itoa(c.redisPort) }

func (c *cluster) startRedis(ctx context.Context) error {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return errors.New("redis-server not found in PATH (Debian: apt-get install -y redis-server), or use --target")
	}
	args := []string{"redis-server", "--port", strconv.Itoa(c.redisPort), "--bind", "127.0.0.1",
		"--dir", c.redisDir, "--daemonize", "no", "--save", "", "--protected-mode", "no"}
	if c.cfg.Persistent {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		var p *process
		if p, err = startProcess("redis", filepath.Join(c.cfg.Dir, "redis.log"), c.cfg.ServerCPUs, args, nil); err != nil {
			return err
		}
		if err = waitRedis(ctx, p, c.redisPort); err == nil {
			c.mu.Lock()
			c.redis = p
			c.mu.Unlock()
			return nil
		}
		p.kill()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond) // a restart may find the port still held briefly
	}
	return fmt.Errorf("redis-server: %w", err)
}

// waitRedis waits until the server answers PING.
func waitRedis(ctx context.Context, p *process, port int) error {
	deadline := time.Now().Add(10 * time.Second)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for {
		if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte("PING\r\n"))
			line, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if err == nil && strings.HasPrefix(line, "+PONG") {
				return nil
			}
		}
		if !p.alive() {
			return errors.New("redis-server exited at start (see redis.log)")
		}
		if time.Now().After(deadline) {
			return errors.New("redis-server did not answer within 10s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// killRedis kills Redis with SIGKILL.
func (c *cluster) killRedis() {
	c.mu.Lock()
	p := c.redis
	c.redis = nil
	c.mu.Unlock()
	p.kill()
}

func (c *cluster) redisPid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.redis == nil {
		return 0
	}
	return c.redis.pid()
}

// startInstance starts `herald serve` number i on free loopback ports and
// waits for its "herald listening" log line.
func (c *cluster) startInstance(ctx context.Context, i int) (*instance, error) {
	args := append(append([]string(nil), c.cfg.Serve...),
		"--addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0",
		"--redis", c.redisURL(), "--secret", c.secret, "--api-key", c.apiKey,
		"--cert-dir", c.cfg.CertDir,
		"--publish-rate", "0", "--max-conns-per-user", "-1",
		"--log-format", "json", "--log-level", "info")
	args = append(args, c.cfg.ServeArgs...)
	pr, pw := io.Pipe()
	logPath := filepath.Join(c.cfg.Dir, fmt.Sprintf("herald-%d.log", i))
	p, err := startProcess(fmt.Sprintf("herald-%d", i), logPath, c.cfg.ServerCPUs, args, pw)
	if err != nil {
		pw.Close()
		return nil, err
	}
	go func() { <-p.done; pw.Close() }()
	found := make(chan *instance, 1)
	go func() {
		// Copy the log to its file; report the listening line.
		log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			_, _ = io.Copy(io.Discard, pr)
			return
		}
		defer log.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = log.Write(append(line, '\n'))
			var rec struct {
				Msg   string `json:"msg"`
				HTTP  string `json:"http"`
				HTTPS string `json:"https_h1_h2_h3"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "herald listening" {
				found <- &instance{process: p, plainURL: "http://" + rec.HTTP, tlsURL: "https://" + rec.HTTPS}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case in := <-found:
		return in, nil
	case <-p.done:
		return nil, fmt.Errorf("herald serve %d exited at start (see %s)", i, logPath)
	case <-time.After(20 * time.Second):
		p.kill()
		return nil, fmt.Errorf("herald serve %d did not start within 20s (see %s)", i, logPath)
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

// close kills every child and waits for them.
func (c *cluster) close() {
	for _, in := range c.instances {
		in.kill()
	}
	c.killRedis()
}

// serverPids are the pids of the live instances.
func (c *cluster) serverPids() []int {
	var pids []int
	for _, in := range c.instances {
		if in.alive() {
			pids = append(pids, in.pid())
		}
	}
	return pids
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
