package h3

import "errors"

// ErrOneWay is returned by a one-way (GET) client's command methods: a GET
// stream has no body to carry commands. Dial with DialOptions.Duplex.
var ErrOneWay = errors.New("h3: one-way stream: dial with Duplex to send commands")
