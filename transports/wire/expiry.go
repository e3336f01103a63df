package wire

import (
	"context"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
)

// TokenVerifier is the optional ability of an Authenticator to verify a
// bare token, the one a refresh command carries. An Authenticator without
// it answers refresh commands with invalid_command.
type TokenVerifier interface {
	VerifyToken(ctx context.Context, token string) (*notify.Grants, error)
}

// DefaultTokenRefreshGrace is Config.TokenRefreshGrace's default.
const DefaultTokenRefreshGrace = 5 * time.Second

// expiry ends a session whose credentials expire. At expiry − grace, or
// halfway through the token's remaining life if that is later, it queues
// an expiring notice (refresh now, or reconnect with a new token): a token
// that lives no longer than the grace is not warned of at once, which
// would send a one-way client, reconnecting on the notice with a token of
// the same life, round in a loop;
// at expiry + grace, unless a refresh moved the expiry, it closes the
// connection with notify.DropTokenExpired. It holds one timer, and none
// while the credentials do not expire.
type expiry struct {
	mu      sync.Mutex  // also guards Session.Grants once the session is open
	at      time.Time   // guarded by mu; zero: never
	from    time.Time   // when at was set (the connect, a refresh); guarded by mu
	warned  bool        // the notice for at is queued; guarded by mu
	timer   *time.Timer // guarded by mu; nil while nothing is armed
	stopped bool        // the session closed; guarded by mu
}

// set makes at the expiry and arms the timer for it (a refresh, or the
// connect).
func (s *Session) setExpiry(at time.Time) {
	x := &s.expiry
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stopped {
		return
	}
	x.at, x.from, x.warned = at, time.Now(), false
	if at.IsZero() {
		if x.timer != nil {
			x.timer.Stop()
			x.timer = nil
		}
		return
	}
	d := time.Until(x.warnAt(s.grace()))
	if x.timer == nil {
		x.timer = time.AfterFunc(max(d, 0), s.expiryTick)
		return
	}
	x.timer.Reset(max(d, 0))
}

// warnAt is when the expiring notice is due; x.mu is held.
func (x *expiry) warnAt(grace time.Duration) time.Time {
	warn := x.at.Add(-grace)
	if half := x.from.Add(x.at.Sub(x.from) / 2); half.After(warn) {
		return half
	}
	return warn
}

// stopExpiry disarms the timer for good.
func (s *Session) stopExpiry() {
	x := &s.expiry
	x.mu.Lock()
	defer x.mu.Unlock()
	x.stopped = true
	if x.timer != nil {
		x.timer.Stop()
		x.timer = nil
	}
}

// expiryTick runs on the timer's goroutine.
func (s *Session) expiryTick() {
	x := &s.expiry
	x.mu.Lock()
	if x.stopped || x.timer == nil {
		x.mu.Unlock()
		return
	}
	now, grace := time.Now(), s.grace()
	warnAt, end := x.warnAt(grace), x.at.Add(grace)
	switch {
	case now.Before(warnAt): // a refresh moved the expiry meanwhile
		x.timer.Reset(warnAt.Sub(now))
		x.mu.Unlock()
	case now.Before(end) && !x.warned:
		x.warned = true
		x.timer.Reset(end.Sub(now))
		x.mu.Unlock()
		s.warnExpiry(end.Sub(now))
	case now.Before(end):
		x.timer.Reset(end.Sub(now))
		x.mu.Unlock()
	default:
		x.timer = nil
		x.mu.Unlock()
		s.Close(notify.Dropped(notify.DropTokenExpired))
	}
}

// warnExpiry queues the expiring notice: the connection ends in left unless
// refreshed. A full queue is not waited for long: the connection then ends
// at its time without the notice, with its reason.
func (s *Session) warnExpiry(left time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_ = s.Conn.Send(ctx, &notify.Envelope{Type: notify.TypeExpiring, Code: notify.ErrTokenExpired.Code, Delay: max(left.Milliseconds(), 0)})
}

// grants returns the session's current grants (a refresh may replace
// them while another goroutine handles commands).
func (s *Session) grants() *notify.Grants {
	s.expiry.mu.Lock()
	defer s.expiry.mu.Unlock()
	return s.Grants
}

func (s *Session) grace() time.Duration {
	if s.cfg == nil || s.cfg.TokenRefreshGrace <= 0 {
		return DefaultTokenRefreshGrace
	}
	return s.cfg.TokenRefreshGrace
}

// refresh runs a refresh command: the new token must verify and name the
// connection's user; its grants then govern the commands that follow and
// its expiry replaces the connection's. Subscriptions already made stay
// until unsubscribed, whatever the new grants say. A refused refresh
// changes nothing.
func (s *Session) refresh(ctx context.Context, cmd Command) error {
	v, ok := s.cfg.Auth.(TokenVerifier)
	if !ok {
		return notify.Errorf(notify.ErrInvalidCommand, "this server does not accept refresh commands")
	}
	g, err := v.VerifyToken(ctx, cmd.Token)
	if err != nil {
		return err
	}
	if g.User != s.grants().User {
		return notify.Errorf(notify.ErrForbidden, "the refresh token is for another user")
	}
	s.expiry.mu.Lock()
	s.Grants = g
	s.expiry.mu.Unlock()
	s.setExpiry(g.Expires)
	return s.Conn.Send(ctx, &notify.Envelope{Type: notify.TypeRefreshed, Ref: cmd.Ref})
}
