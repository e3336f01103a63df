package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// workerFleet is a fleet without connections whose subscribers (all on
// channel 0) received seqs.
func workerFleet(received ...[]int64) *fleet {
	f := &fleet{lat: newLatencies(), slowLat: newLatencies()}
	for i, seqs := range received {
		s := &subscriber{idx: i}
		for _, q := range seqs {
			s.st.observe(q)
			f.lat.record(i, time.Duration(q)*time.Millisecond)
		}
		f.subs = append(f.subs, s)
	}
	return f
}

// roundTrip encodes v as JSON and decodes it into out, as the pipe
// between the bench and a worker does.
func roundTrip[T any](t *testing.T, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWorkerCorrectnessMerge: the publisher's record goes to each worker,
// each counts its own subscribers against it, and the merged counts are
// exact: a duplicate, a reordering and a loss seen by different workers
// all show up once, a failed publish is not a loss, and the histograms add
// up.
func TestWorkerCorrectnessMerge(t *testing.T) {
	// The parent's publisher: 5 messages on channel 0, the 3rd failed.
	pub := &publisher{seq: make([]atomic.Int64, 1), failed: map[int]map[int64]bool{0: {3: true}}}
	pub.seq[0].Store(5)
	pub.failures.Store(1)
	fin := roundTrip(t, finishCommand(pub, time.Second))
	if len(fin.Published) != 1 || fin.Published[0] != 5 || len(fin.Failed[0]) != 1 || fin.Failed[0][0] != 3 {
		t.Fatalf("finish command %+v", fin)
	}

	workers := []*fleet{
		workerFleet([]int64{1, 2, 3, 4, 5}, []int64{1, 2, 2, 4, 5}), // a duplicate
		workerFleet([]int64{1, 2, 5, 4}, []int64{1, 2, 4}),          // reordered; 5 lost
		workerFleet([]int64{1, 2, 4, 5}),                            // 3 never arrived: its publish failed
	}
	var results []*workerResult
	for _, f := range workers {
		p := publishedRecord(fin.Published, fin.Failed)
		res := &workerResult{Clients: len(f.subs), Correctness: f.correctness(p), Latency: f.lat.merged().Export()}
		results = append(results, roundTrip(t, res))
	}
	m, err := mergeWorkers(results, pub.failures.Load())
	if err != nil {
		t.Fatal(err)
	}
	want := Correctness{Expected: 5 * 4, Delivered: 5 + 5 + 4 + 3 + 4, Lost: 1, Duplicate: 1, Reordered: 1, PubFailed: 1}
	if m.Correctness != want {
		t.Errorf("merged %+v\nwant   %+v", m.Correctness, want)
	}
	if got := m.Latency.TotalCount(); got != want.Delivered {
		t.Errorf("merged histogram holds %d latencies, want %d", got, want.Delivered)
	}
	if got := m.Latency.Max(); got < 5000 || got > 5010 {
		t.Errorf("merged histogram max %d µs, want 5000", got)
	}

	// A worker without its result is an error, not a pass.
	if _, err := mergeWorkers(append(results, nil), 0); err == nil {
		t.Error("merging a missing result succeeded")
	}
}

// TestWorkerProtocol drives RunWorker through its pipes: config,
// progress, measure, finish, result; and a bad first message is an error
// message.
func TestWorkerProtocol(t *testing.T) {
	run := func(cmds ...workerCommand) []workerMsg {
		t.Helper()
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- RunWorker(ctx, inR, outW); outW.Close() }()
		enc := json.NewEncoder(inW)
		var msgs []workerMsg
		dec := json.NewDecoder(bufio.NewReader(outR))
		for i, c := range cmds {
			if err := enc.Encode(c); err != nil {
				t.Fatal(err)
			}
			if i == 0 && c.Type == "config" {
				// Wait for a progress report before going on.
				var m workerMsg
				if err := dec.Decode(&m); err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, m)
			}
		}
		for {
			var m workerMsg
			if err := dec.Decode(&m); err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		inW.Close()
		<-errc
		return msgs
	}

	now := time.Now()
	msgs := run(
		workerCommand{Type: "config", Config: &workerConfig{Transport: WS, APIKey: "k", Prefix: "p",
			Instances: []workerTarget{{Plain: "http://127.0.0.1:1"}}, Channels: []string{"c"}, Broadcast: true}},
		workerCommand{Type: "measure", WindowStart: now.UnixNano(), WindowEnd: now.Add(50 * time.Millisecond).UnixNano()},
		workerCommand{Type: "finish", Published: []int64{0}, DrainMs: 10},
	)
	if len(msgs) < 2 || msgs[0].Type != "progress" || msgs[len(msgs)-1].Type != "result" {
		t.Fatalf("messages %+v: want progress first and result last", msgs)
	}
	res := msgs[len(msgs)-1].Result
	if res == nil || res.Latency == nil || res.Window[1].At < now.Add(50*time.Millisecond).UnixNano() || res.CPU <= 0 {
		t.Errorf("result %+v", res)
	}

	msgs = run(workerCommand{Type: "finish"})
	if len(msgs) != 1 || msgs[0].Type != "error" || !strings.Contains(msgs[0].Error, "config") {
		t.Errorf("a finish first: %+v, want an error about the config", msgs)
	}
}

// TestWorkerDeath: a worker process that exits without its result is an
// error naming its exit status.
func TestWorkerDeath(t *testing.T) {
	w, err := startWorker([]string{"sh", "-c", "read line; echo dying >&2; exit 3"}, 7, "", t.TempDir()+"/worker.log",
		&workerConfig{To: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.stop(time.Second)
	select {
	case <-w.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not end")
	}
	err = w.err()
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "dying") {
		t.Errorf("err() = %v; want it to say the worker died, with its exit status and log", err)
	}
}
