package cluster

// stopSending makes the member fall silent without a word, as one killed
// or cut off does.
func (x *exchange) stopSending() {
	x.halt()
	x.mu.Lock()
	x.closed = true
	x.mu.Unlock()
}
