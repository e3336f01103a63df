package ws_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/connmem"
)

// upgradeCounts are TestEarlyFrameStress's upgrades in all and at a time:
// HERALD_WS_UPGRADES overrides the total. A wave holds a file per
// connection in each process (a process may open about 20,000).
func upgradeCounts(t *testing.T) (total, wave int) {
	total, wave = 20000, 1000
	if raceEnabled {
		total, wave = 2000, 500
	}
	if s := os.Getenv("HERALD_WS_UPGRADES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("HERALD_WS_UPGRADES=%q: want a positive number", s)
		}
		total = n
	}
	return total, min(wave, total)
}

// TestEarlyFrameStress: many clients upgrade at once, each sending a ping
// the moment the first bytes of its upgrade response arrive — while
// net/http's background read may still be pending on the server, which then
// holds the frame's first byte. Every client must get its pong: no
// protocol error (the symptom of a lost first byte: the frame's second byte
// read as a header, "unexpected rsv bits"), no missing answer.
//
// The server runs in a child process (TestMain's handler): with client and
// server in one process, the old leanHijacker lost no byte in 3 × 20,000
// upgrades; across processes it lost 8–35 per 20,000, as in production.
func TestEarlyFrameStress(t *testing.T) {
	total, wave := upgradeCounts(t)
	host := connmem.StartChild(t).Addr
	deadline := time.Now().Add(3 * time.Minute) // bound: start no wave after it
	var (
		mu       sync.Mutex
		protocol int
		failures []error
	)
	done := 0
	start := time.Now()
	for done < total && time.Now().Before(deadline) {
		n := min(wave, total-done)
		var wg sync.WaitGroup
		for i := done; i < done+n; i++ {
			wg.Go(func() {
				if err := pingAtOnce(host, i); err != nil {
					mu.Lock()
					if protocolError(err) {
						protocol++
					}
					failures = append(failures, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		done += n
	}
	t.Logf("%d upgrades in waves of %d in %v: %d protocol errors, %d failures in all",
		done, wave, time.Since(start).Round(time.Millisecond), protocol, len(failures))
	if done < total {
		t.Logf("stopped at the time bound after %d of %d upgrades", done, total)
	}
	for i, err := range failures {
		if i == 5 {
			t.Errorf("… and %d more", len(failures)-i)
			break
		}
		t.Errorf("%v", err)
	}
}

// pingAtOnce upgrades as user u<i> and sends a ping as soon as the first
// bytes of the response arrive, then expects the user's subscribed notice
// and the pong.
func pingAtOnce(host string, i int) error {
	user := "u" + strconv.Itoa(i)
	ref := "p" + strconv.Itoa(i)
	nc, err := net.DialTimeout("tcp", host, 20*time.Second)
	if err != nil {
		return err
	}
	// Reset on close: no TIME_WAIT, so 20,000 connections in a row do not
	// exhaust the ephemeral ports.
	_ = nc.(*net.TCPConn).SetLinger(0)
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write(upgradeRequest(host, user)); err != nil {
		return err
	}
	first := make([]byte, 512)
	n, err := nc.Read(first)
	if err != nil {
		return fmt.Errorf("%s: reading the response: %w", user, err)
	}
	if _, err := nc.Write(clientFrame(pingCmd(ref))); err != nil {
		return err
	}
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(first[:n]), nc))
	if err := readUpgrade(br); err != nil {
		return fmt.Errorf("%s: %w", user, err)
	}
	got, err := readAnswers(br, 2)
	if err != nil {
		return fmt.Errorf("%s: after %q: %w", user, got, err)
	}
	if want := []string{answer("subscribed", "user:"+user, ""), answer("pong", "", ref)}; got[0] != want[0] || got[1] != want[1] {
		return fmt.Errorf("%s: answers %q, want %q", user, got[:2], want)
	}
	return nil
}
