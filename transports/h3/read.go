package h3

// readLoop is the stream's second goroutine. It subscribes the channels
// asked for at connect — which may wait for queue room while history
// replays, so it cannot be the writer — then, for POST, runs the client's
// commands, one per line of the request body (wire.Session.ReadCommands).
//
// The end of the request body ends only this loop: the client has nothing
// more to say but goes on listening, and the stream lives until the client
// cancels it or the server ends it.
func (s *stream) readLoop() {
	defer close(s.readerDone)
	if !s.sess.SubscribeInitial(s.ctx) || !s.duplex {
		return
	}
	s.sess.ReadCommands(s.ctx, s.r.Body)
}
