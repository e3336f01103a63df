package notify

import "strconv"

// PresenceSet is the bookkeeping every Presence implementation shares: a set
// of members keyed by connection, and the changes queued since the last
// Flush. It is not safe for concurrent use; its owner guards it.
type PresenceSet struct {
	members []Member       // in no particular order (removal swaps the last in)
	index   map[string]int // Conn → position in members
	pending []presenceChange
}

type presenceChange struct {
	m    Member
	join bool
}

// Queue records a join (or a leave) of m, applied at the next Flush. It
// reports whether it is the first change since the last Flush: the moment
// to arm the flush timer.
func (s *PresenceSet) Queue(m Member, join bool) (first bool) {
	s.pending = append(s.pending, presenceChange{m: m, join: join})
	return len(s.pending) == 1
}

// Pending reports whether changes are queued.
func (s *PresenceSet) Pending() bool { return len(s.pending) > 0 }

// Flush applies the queued changes in call order and returns their net
// effect against the set before them: a member that joined and left in the
// same batch is in neither list; a connection that joined again as another
// user leaves as the old one and joins as the new one.
func (s *PresenceSet) Flush() (joins, leaves []Member) {
	if len(s.pending) == 0 {
		return nil, nil
	}
	before := make(map[string]*Member, len(s.pending))
	order := make([]string, 0, len(s.pending))
	for _, ch := range s.pending {
		if _, seen := before[ch.m.Conn]; !seen {
			order = append(order, ch.m.Conn)
			before[ch.m.Conn] = s.lookup(ch.m.Conn)
		}
		if ch.join {
			s.add(ch.m)
		} else {
			s.remove(ch.m.Conn)
		}
	}
	clear(s.pending)
	s.pending = s.pending[:0]
	for _, conn := range order {
		was, now := before[conn], s.lookup(conn)
		switch {
		case was != nil && (now == nil || now.User != was.User):
			leaves = append(leaves, *was)
			if now != nil {
				joins = append(joins, *now)
			}
		case was == nil && now != nil:
			joins = append(joins, *now)
		}
	}
	return joins, leaves
}

// lookup returns a copy of conn's member, or nil.
func (s *PresenceSet) lookup(conn string) *Member {
	i, ok := s.index[conn]
	if !ok {
		return nil
	}
	m := s.members[i]
	return &m
}

func (s *PresenceSet) add(m Member) {
	if i, ok := s.index[m.Conn]; ok {
		s.members[i] = m
		return
	}
	if s.index == nil {
		s.index = make(map[string]int)
	}
	s.index[m.Conn] = len(s.members)
	s.members = append(s.members, m)
}

func (s *PresenceSet) remove(conn string) {
	i, ok := s.index[conn]
	if !ok {
		return
	}
	last := len(s.members) - 1
	if i != last {
		s.members[i] = s.members[last]
		s.index[s.members[i].Conn] = i
	}
	s.members[last] = Member{}
	s.members = s.members[:last]
	delete(s.index, conn)
}

// Has reports whether conn is a member (after the last Flush).
func (s *PresenceSet) Has(conn string) bool {
	_, ok := s.index[conn]
	return ok
}

// Len is the number of members, after the last Flush.
func (s *PresenceSet) Len() int { return len(s.members) }

// Members returns the members (after the last Flush); the slice is the
// set's own, valid until the next Flush.
func (s *PresenceSet) Members() []Member { return s.members }

// Page returns up to limit members from cursor (an offset that a previous
// Page returned, "" for the first page) and the next page's cursor ("" at
// the end). A stable set is covered exactly once; members that join or
// leave meanwhile may be missed or listed twice. A malformed cursor is an
// ErrInvalidCursor error.
func (s *PresenceSet) Page(limit int, cursor string) ([]Member, string, error) {
	from, err := parseOffsetCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	if limit <= 0 || from >= len(s.members) {
		return nil, "", nil
	}
	to := min(from+limit, len(s.members))
	page := append([]Member(nil), s.members[from:to]...)
	if to == len(s.members) {
		return page, "", nil
	}
	return page, strconv.Itoa(to), nil
}

func parseOffsetCursor(cursor string) (int, error) {
	if cursor == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(cursor)
	if err != nil || n < 0 || strconv.Itoa(n) != cursor {
		return 0, errorf(ErrInvalidCursor, "presence cursor %q is not one a previous page returned", truncate(cursor))
	}
	return n, nil
}
