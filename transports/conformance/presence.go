package conformance

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/heraldhq/herald/notify"
)

// presenceView is a channel's members as a client sees them: the subscribed
// notice's snapshot, then each presence envelope's joins and leaves applied
// in order.
type presenceView struct {
	members map[notify.Member]bool
	count   int
}

// apply applies a subscribed notice's snapshot or a presence envelope.
func (v *presenceView) apply(t *testing.T, e *notify.Envelope) {
	t.Helper()
	var p struct {
		Count   int             `json:"count"`
		Members []notify.Member `json:"members"`
		Joins   []notify.Member `json:"joins"`
		Leaves  []notify.Member `json:"leaves"`
	}
	if e.Presence == nil || json.Unmarshal(e.Presence, &p) != nil {
		t.Fatalf("%s has no valid presence field", e.JSON())
	}
	if v.members == nil {
		v.members = map[notify.Member]bool{}
	}
	for _, m := range append(p.Members, p.Joins...) {
		v.members[m] = true
	}
	for _, m := range p.Leaves {
		delete(v.members, m)
	}
	v.count = p.Count
}

func (v *presenceView) hasUser(user string) bool {
	for m := range v.members {
		if m.User == user {
			return true
		}
	}
	return false
}

// subscribedWithPresence reads channel's subscribed notice, which must
// carry a snapshot, into a new view.
func (r *reader) subscribedWithPresence(channel string) *presenceView {
	r.t.Helper()
	v := &presenceView{}
	v.apply(r.t, r.expect(notify.TypeSubscribed, channel))
	return v
}

// subscribedWithoutPresence reads channel's subscribed notice, which must
// carry no snapshot.
func (r *reader) subscribedWithoutPresence(channel string) {
	r.t.Helper()
	if s := r.expect(notify.TypeSubscribed, channel); s.Presence != nil {
		r.t.Fatalf("%s has a presence snapshot; want none", s.JSON())
	}
}

// awaitPresence reads presence envelopes of channel into v until cond
// holds; any other envelope fails.
func (r *reader) awaitPresence(channel string, v *presenceView, what string, cond func() bool) {
	r.t.Helper()
	for !cond() {
		e := r.next()
		if e.Type != notify.TypePresence || e.Channel != channel || !e.ID.IsZero() {
			r.t.Fatalf("got %s while waiting for presence on %s: %s", e.JSON(), channel, what)
		}
		v.apply(r.t, e)
	}
}

// memberOf returns user's one connection as a presence member.
func (e *env) memberOf(user string) notify.Member {
	e.t.Helper()
	e.waitUserConns(user, 1, 0)
	return notify.Member{User: user, Conn: e.hub.UserConns(user)[0].ID()}
}

// testPresence: a subscriber granted presence sees the others join and
// leave, and a newcomer's subscribed notice lists who is there.
func testPresence(t *testing.T, tr Transport) {
	e := start(t, tr, setup{presence: true})
	dial := func(user string) *reader {
		r := newReader(t, e.dial(DialOptions{Token: PresenceToken(user), Channels: []string{"room.1"}}), []string{"user:" + user, "room.1"})
		r.subscribedWithoutPresence("user:" + user) // no presence grant on the user's own channel
		return r
	}
	a := dial("ann")
	va := a.subscribedWithPresence("room.1")
	ann := e.memberOf("ann")
	a.awaitPresence("room.1", va, "ann's own join", func() bool { return va.members[ann] })

	b := dial("ben")
	b.subscribedWithPresence("room.1")
	ben := e.memberOf("ben")
	a.awaitPresence("room.1", va, "ben's join", func() bool { return va.members[ben] })
	if va.count != 2 || len(va.members) != 2 {
		t.Fatalf("ann sees %v, count %d; want ann and ben", va.members, va.count)
	}

	b.c.Drop()
	a.awaitPresence("room.1", va, "ben's leave", func() bool { return !va.members[ben] })
	if va.count != 1 || len(va.members) != 1 || !va.members[ann] {
		t.Fatalf("after ben left ann sees %v, count %d; want ann alone", va.members, va.count)
	}

	c := dial("cat")
	vc := c.subscribedWithPresence("room.1")
	if !vc.members[ann] || vc.hasUser("ben") || vc.count != len(vc.members) || vc.count > 2 {
		t.Fatalf("cat's snapshot %v, count %d; want ann (and maybe cat), not ben", vc.members, vc.count)
	}
	a.awaitPresence("room.1", va, "cat's join", func() bool { return va.hasUser("cat") })

	// Presence moves no position: a message follows with its ID, and the
	// transport's cursor agrees with the messages alone.
	id := e.publish("room.1", 1)
	if m := a.expect(notify.TypeMessage, "room.1"); m.ID != id {
		t.Fatalf("message %v; want %v", m.ID, id)
	}
	a.cursor()
}

// testPresenceNotGranted: without a presence grant a subscription gets no
// snapshot and no diffs and is no member; a duplex client may opt out, and
// may not opt in without the grant or on a server without presence.
func testPresenceNotGranted(t *testing.T, tr Transport) {
	e := start(t, tr, setup{presence: true})
	al := newReader(t, e.dial(DialOptions{Token: TokenAlice, Channels: []string{"room.1"}}), []string{"user:alice", "room.1"})
	al.subscribedWithoutPresence("user:alice")
	al.subscribedWithoutPresence("room.1")

	p := newReader(t, e.dial(DialOptions{Token: PresenceToken("pat"), Channels: []string{"room.1"}}), []string{"user:pat", "room.1"})
	p.subscribedWithoutPresence("user:pat")
	vp := p.subscribedWithPresence("room.1")
	pat := e.memberOf("pat")
	p.awaitPresence("room.1", vp, "pat's own join", func() bool { return vp.members[pat] })
	if vp.hasUser("alice") {
		t.Fatalf("alice, without the grant, is a member: %v", vp.members)
	}
	page, err := e.hub.Presence().Members(context.Background(), "room.1", 100, "")
	if err != nil || page.Count != 1 || len(page.Members) != 1 || page.Members[0] != pat {
		t.Fatalf("room.1's members: %+v, %v; want pat alone", page, err)
	}
	// Pat's join was announced; alice's next envelope is the message.
	id := e.publish("room.1", 1)
	if m := al.expect(notify.TypeMessage, "room.1"); m.ID != id {
		t.Fatalf("alice got %s; want the message", m.JSON())
	}
	p.expect(notify.TypeMessage, "room.1")

	if !e.dialer.Duplex() {
		return
	}
	send(t, al.c, `{"type":"subscribe","channel":"room.2","presence":true,"ref":"a1"}`)
	if got := al.expect(notify.TypeError, "room.2"); got.Code != notify.ErrForbidden.Code || got.Ref != "a1" {
		t.Fatalf("presence without the grant: %s; want forbidden", got.JSON())
	}
	send(t, p.c, `{"type":"subscribe","channel":"room.2","presence":false}`)
	p.subscribedWithoutPresence("room.2")
	send(t, p.c, `{"type":"subscribe","channel":"room.3"}`)
	v3 := p.subscribedWithPresence("room.3")
	// Nothing of room.2 comes before pat's join of room.3.
	p.awaitPresence("room.3", v3, "pat's join of room.3", func() bool { return v3.members[pat] })
	if page, _ := e.hub.Presence().Members(context.Background(), "room.2", 10, ""); page.Count != 0 {
		t.Fatalf("an opted-out subscription is a member of room.2: %+v", page)
	}
}

// testPresenceDisabled: on a server without presence a presence grant
// changes nothing, and asking for presence is a clear error.
func testPresenceDisabled(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	r := newReader(t, e.dial(DialOptions{Token: PresenceToken("pat"), Channels: []string{"room.1"}}), []string{"user:pat", "room.1"})
	r.subscribedWithoutPresence("user:pat")
	r.subscribedWithoutPresence("room.1")
	if !e.dialer.Duplex() {
		return
	}
	send(t, r.c, `{"type":"subscribe","channel":"room.2","presence":true,"ref":"p"}`)
	if got := r.expect(notify.TypeError, "room.2"); got.Code != notify.ErrPresenceDisabled.Code || got.Ref != "p" {
		t.Fatalf("presence on a server without it: %s; want presence_disabled", got.JSON())
	}
	send(t, r.c, `{"type":"subscribe","channel":"room.2","ref":"q"}`)
	r.subscribedWithoutPresence("room.2")
}
