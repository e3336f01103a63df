package bench

import (
	"bufio"
	"context"
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

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/freeport"
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
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := childCommand(argv, cpus)
	cmd.Stdout = log
	cmd.Stderr = log
	if stderr != nil {
		cmd.Stderr = stderr
	}
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

// childCommand is argv as a child of the bench: pinned to the CPU list cpus
// when it is set (through taskset, so that every thread inherits it from
// the start), killed should the bench die without tearing down, and in a
// process group of its own (a terminal's ^C goes to the bench, which stops
// its children in order).
func childCommand(argv []string, cpus string) *exec.Cmd {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return cmd
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
	// RedisURL, when set, is a running Redis or Redis Cluster the
	// instances use: no Redis is started.
	RedisURL string
	// RedisCluster, when > 0, starts a Redis Cluster of that many masters
	// (no replicas) instead of one redis-server.
	RedisCluster int
}

// cluster is a private Redis (one redis-server, or the nodes of a Redis
// Cluster) and Herald instances, all children of the bench; or only the
// instances, with a Redis the bench did not start (RedisURL).
type cluster struct {
	cfg       clusterConfig
	secret    string
	apiKey    string
	redis     []*redisNode // empty with cfg.RedisURL
	instances []*instance
	mu        sync.Mutex // guards every redisNode's proc
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

// redisNode is one redis-server the bench runs: the only one, or a node of
// its Redis Cluster. A restart reuses its port and directory (AOF and, in a
// cluster, nodes.conf).
type redisNode struct {
	port int
	dir  string
	log  string
	proc *process // guarded by cluster.mu
}

func (n *redisNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

func startCluster(ctx context.Context, cfg clusterConfig, secret, apiKey string) (_ *cluster, err error) {
	c := &cluster{cfg: cfg, secret: secret, apiKey: apiKey}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	switch {
	case cfg.RedisURL != "":
		// The user's Redis: nothing to start.
	case cfg.RedisCluster > 0:
		for i := range cfg.RedisCluster {
			// Redis Cluster's bus listens on port+10000: both must be free,
			// and below the ephemeral range, where a client socket cannot
			// take the port while the node restarts.
			var taken []int
			for _, n := range c.redis {
				taken = append(taken, n.port)
			}
			port, err := freeport.BelowEphemeral(taken...)
			if err != nil {
				return nil, err
			}
			c.redis = append(c.redis, &redisNode{port: port, dir: filepath.Join(cfg.Dir, fmt.Sprintf("redis-%d", i)),
				log: filepath.Join(cfg.Dir, fmt.Sprintf("redis-%d.log", i))})
		}
	default:
		// Below the ephemeral range too: redis-restart restarts it on
		// this port.
		port, err := freeport.BelowEphemeral()
		if err != nil {
			return nil, err
		}
		c.redis = []*redisNode{{port: port, dir: filepath.Join(cfg.Dir, "redis"), log: filepath.Join(cfg.Dir, "redis.log")}}
	}
	for _, n := range c.redis {
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return nil, err
		}
	}
	if len(c.redis) > 0 {
		if err := c.startRedis(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.RedisCluster > 0 {
		if err := c.createRedisCluster(ctx); err != nil {
			return nil, err
		}
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

// redisURL is the --redis URL the instances get.
func (c *cluster) redisURL() string {
	switch {
	case c.cfg.RedisURL != "":
		return c.cfg.RedisURL
	case c.cfg.RedisCluster > 0:
		return "redis-cluster://" + strings.Join(c.redisAddrs(), ",")
	}
	return "redis://" + c.redis[0].addr()
}

// startRedis starts every Redis node that is not running, on its port and
// with its directory, and waits until each answers PING; a restarted Redis
// Cluster also until it is whole again (cluster_state:ok on every node). A
// Redis the bench did not start cannot be started.
func (c *cluster) startRedis(ctx context.Context) error {
	if len(c.redis) == 0 {
		return errors.New("the bench did not start this Redis (--redis), so it cannot start it")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return errors.New("redis-server not found in PATH (Debian: apt-get install -y redis-server), or use --redis or --target")
	}
	restart := false
	for _, n := range c.redis {
		c.mu.Lock()
		running := n.proc != nil
		c.mu.Unlock()
		if running {
			continue
		}
		if _, err := os.Stat(filepath.Join(n.dir, "nodes.conf")); err == nil {
			restart = true
		}
		if err := c.startNode(ctx, n); err != nil {
			return err
		}
	}
	if c.cfg.RedisCluster > 0 && restart {
		return waitClusterOK(ctx, c.redisAddrs(), 30*time.Second)
	}
	return nil
}

func (c *cluster) startNode(ctx context.Context, n *redisNode) error {
	args := []string{"redis-server", "--port", strconv.Itoa(n.port), "--bind", "127.0.0.1",
		"--dir", n.dir, "--daemonize", "no", "--save", "", "--protected-mode", "no"}
	if c.cfg.Persistent {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if c.cfg.RedisCluster > 0 {
		// nodes.conf in the node's directory: a restarted node rejoins
		// with its identity and slots.
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000")
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		var p *process
		if p, err = startProcess("redis", n.log, c.cfg.ServerCPUs, args, nil); err != nil {
			return err
		}
		if err = waitRedis(ctx, p, n.port); err == nil {
			c.mu.Lock()
			n.proc = p
			c.mu.Unlock()
			return nil
		}
		p.kill()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond) // a restart may find the port still held briefly
	}
	return fmt.Errorf("redis-server on port %d: %w (see %s)", n.port, err, n.log)
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
			return errors.New("redis-server exited at start")
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

// createRedisCluster joins the nodes into a Redis Cluster, the slots spread
// evenly over them as masters, and waits until every node agrees.
func (c *cluster) createRedisCluster(ctx context.Context) error {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return errors.New("redis-cli not found in PATH (Debian: apt-get install -y redis-tools); --redis-cluster needs it to create the cluster")
	}
	args := append([]string{"--cluster", "create"}, c.redisAddrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "redis-cli", args...).CombinedOutput()
	_ = os.WriteFile(filepath.Join(c.cfg.Dir, "redis-cluster-create.log"), out, 0o644)
	if err != nil {
		return fmt.Errorf("redis-cli --cluster create: %v (see %s)", err, filepath.Join(c.cfg.Dir, "redis-cluster-create.log"))
	}
	return waitClusterOK(ctx, c.redisAddrs(), 30*time.Second)
}

func (c *cluster) redisAddrs() []string {
	addrs := make([]string, len(c.redis))
	for i, n := range c.redis {
		addrs[i] = n.addr()
	}
	return addrs
}

// waitClusterOK waits until every node reports cluster_state:ok, with all
// slots served and every node known to every node.
func waitClusterOK(ctx context.Context, addrs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	why := ""
	for {
		ok := true
		for _, a := range addrs {
			if why = clusterNodeOK(ctx, a, len(addrs)); why != "" {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not ok after %v: %s", timeout, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clusterNodeOK is "" when the node at addr sees a whole cluster of n
// masters, else what is missing.
func clusterNodeOK(ctx context.Context, addr string, n int) string {
	cl := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return addr + ": " + err.Error()
	}
	got := map[string]string{}
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			got[k] = v
		}
	}
	for _, w := range [][2]string{{"cluster_state", "ok"}, {"cluster_slots_ok", "16384"},
		{"cluster_known_nodes", strconv.Itoa(n)}, {"cluster_size", strconv.Itoa(n)}} {
		if got[w[0]] != w[1] {
			return fmt.Sprintf("%s: %s:%s, want %s", addr, w[0], got[w[0]], w[1])
		}
	}
	return ""
}

// killRedis kills every Redis node with SIGKILL.
func (c *cluster) killRedis() {
	c.mu.Lock()
	var ps []*process
	for _, n := range c.redis {
		ps = append(ps, n.proc)
		n.proc = nil
	}
	c.mu.Unlock()
	for _, p := range ps {
		p.kill()
	}
}

// redisPids are the pids of the running Redis nodes: none with a Redis the
// bench did not start.
func (c *cluster) redisPids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pids []int
	for _, n := range c.redis {
		if n.proc != nil {
			pids = append(pids, n.proc.pid())
		}
	}
	return pids
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
	found := make(chan listenAddrs, 1)
	go copyLogFindListen(pr, logPath, found)
	select {
	case a := <-found:
		return &instance{process: p, plainURL: "http://" + a.http, tlsURL: "https://" + a.https}, nil
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
