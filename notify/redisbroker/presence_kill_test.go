package redisbroker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

// presenceChildEnv makes the test binary a presence child (TestMain): an
// instance that joins killMembers members and runs until it is killed. Its
// value is "redis ADDR" or "cluster ADDR,ADDR,…".
const presenceChildEnv = "HERALD_PRESENCE_CHILD"

// The kill test's presence configuration: a short lease, so the bound
// Lease + Interval is 1.1 s.
var killPresence = notify.PresenceConfig{Interval: 100 * time.Millisecond, Lease: time.Second}

const (
	killChannel = "room.kill"
	killMembers = 50
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(presenceChildEnv); spec != "" {
		os.Exit(presenceChild(spec))
	}
	os.Exit(m.Run())
}

// presenceChild joins killMembers members, prints "ready" once Redis has
// them and renews them until it is killed (or its stdin closes, or two
// minutes pass: no orphan outlives a failed test).
func presenceChild(spec string) int {
	mode, addrs, _ := strings.Cut(spec, " ")
	var client redis.UniversalClient
	if mode == "cluster" {
		client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), MaxRetries: -1})
	} else {
		client = redis.NewClient(&redis.Options{Addr: addrs, MaxRetries: -1})
	}
	b, err := redisbroker.New(redisbroker.Config{Client: client, Presence: killPresence})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := range killMembers {
		b.Join(killChannel, notify.Member{User: "dead", Conn: fmt.Sprintf("dead-%02d", i)})
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		page, err := b.Members(context.Background(), killChannel, 0, "")
		if err == nil && page.Count >= killMembers {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "members not written:", page, err)
			return 1
		}
	}
	fmt.Println("ready")
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-eof:
	case <-time.After(2 * time.Minute):
	}
	return 0
}

// startPresenceChild starts a presence child on spec and waits until it is
// ready.
func startPresenceChild(t *testing.T, spec string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), presenceChildEnv+"="+spec)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("presence child failed before it was ready")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("presence child not ready within 30s")
	}
	return cmd
}

// testPresenceKill: an instance (a child process) holds killMembers
// members; another instance holds one. While the child lives its members
// stay, past several leases (renewal). Killed with SIGKILL, it never calls
// Leave: an observer — an instance subscribed to the channel, with no
// member there — receives their leaves within Lease + Interval (plus a
// second of slack for a loaded machine), and the other instance's member
// stays.
func testPresenceKill(t *testing.T, spec string, newInstance func() *redisbroker.Broker) {
	observer, survivor := newInstance(), newInstance()
	sink := brokertest.SubscribePresence(t, observer, killChannel)
	alive := notify.Member{User: "alive", Conn: "alive-1"}
	survivor.Join(killChannel, alive)
	child := startPresenceChild(t, spec)

	all := func(evs []brokertest.PresenceEvent) bool { return len(brokertest.Present(evs)) == killMembers+1 }
	sink.WaitFor(t, 10*time.Second, "every member", all)
	time.Sleep(3 * killPresence.Lease)
	if evs := sink.Events(); !all(evs) {
		t.Fatalf("members left while their instances lived (renewal failed): present %d, want %d", len(brokertest.Present(evs)), killMembers+1)
	}

	killed := time.Now()
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	bound := killPresence.Lease + killPresence.Interval
	evs := sink.WaitFor(t, bound+10*time.Second, "the dead instance's members to leave", func(evs []brokertest.PresenceEvent) bool {
		return len(brokertest.Present(evs)) == 1
	})
	took := time.Since(killed)
	t.Logf("the %d members of the killed instance left %v after SIGKILL (bound %v)", killMembers, took.Round(time.Millisecond), bound)
	if took > bound+time.Second {
		t.Errorf("members left %v after the kill; want within Lease + Interval = %v (+1s slack)", took, bound)
	}
	if p := brokertest.Present(evs); p[alive.Conn] != alive {
		t.Fatalf("present after the kill: %v; want only %v", p, alive)
	}
	if last := evs[len(evs)-1]; last.Count != 1 {
		t.Fatalf("last presence envelope's count %d; want 1", last.Count)
	}
	page, err := observer.Members(context.Background(), killChannel, 10, "")
	if err != nil || page.Count != 1 || len(page.Members) != 1 || page.Members[0] != alive {
		t.Fatalf("Members after the kill = %+v, %v; want just %v", page, err, alive)
	}
}

func TestPresenceKilledInstance(t *testing.T) {
	srv := redistest.Start(t)
	testPresenceKill(t, "redis "+srv.Addr(), func() *redisbroker.Broker {
		return newBroker(t, srv, redisbroker.Config{Presence: killPresence})
	})
}

func TestClusterPresenceKilledInstance(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	testPresenceKill(t, "cluster "+strings.Join(c.Addrs(), ","), func() *redisbroker.Broker {
		return newClusterBroker(t, c, redisbroker.Config{Presence: killPresence})
	})
}
