package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/heraldhq/herald/notify"
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

func TestCauseKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&quic.IdleTimeoutError{}, "QUIC idle timeout"},
		{fmt.Errorf("h3: read: %w", &quic.StatelessResetError{}), "QUIC stateless reset"},
		{&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNREFUSED)}, "connection refused (ICMP port unreachable, TCP RST)"},
		{io.EOF, "end of stream"},
		{fmt.Errorf(`client: channel "user:u12418": %w`, notify.ErrUnavailable), "server error unavailable"},
		{errors.New(strings.Repeat("x", 100)), strings.Repeat("x", 60)},
	} {
		if got := causeKind(c.err); got != c.want {
			t.Errorf("causeKind(%v) = %q; want %q", c.err, got, c.want)
		}
	}
	f := &fleet{}
	f.cause(io.EOF)
	f.cause(&quic.IdleTimeoutError{})
	f.cause(&quic.IdleTimeoutError{})
	if got, want := f.causesNote(), "why connections ended (client side): QUIC idle timeout 2, end of stream 1"; got != want {
		t.Errorf("causesNote = %q; want %q", got, want)
	}
}
