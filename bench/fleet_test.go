package bench

import (
	"context"
	"testing"
	"time"
)

// TestFleetCloseBeforeDialTurn closes a fleet whose clients never got a
// dialing slot (the run ended while thousands waited for their turn):
// close must return, not wait for a slot the client never held.
func TestFleetCloseBeforeDialTurn(t *testing.T) {
	f := newFleet(context.Background(), newDialEnv(WS, nil, nil, nil))
	for range cap(f.dialing) {
		f.dialing <- struct{}{} // every slot taken by someone else
	}
	tk := &tokens{api: newAPI("key", nil), m: map[string]string{}}
	if err := f.add(tk, "u1", 0, "user:u1", 0, "http://127.0.0.1:1", "https://127.0.0.1:1", nil); err != nil {
		t.Fatal(err)
	}
	f.cancel()                        // the run ends before its turn…
	time.Sleep(50 * time.Millisecond) // …its Run goroutine gives up…
	for range cap(f.dialing) {        // …and the others release theirs
		<-f.dialing
	}
	closed := make(chan struct{})
	go func() { f.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("fleet.close hangs on a client that never held a dialing slot")
	}
}
