package rooms

// ChannelConns returns how many connections (streams and held polls) are in
// h's channel ch.
func ChannelConns(h *Hub, ch string) int {
	h.mu.RLock()
	c := h.channels[ch]
	h.mu.RUnlock()
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// ReplayWaiting returns how many resumes are reading history.
func ReplayWaiting(h *Hub) int { return int(h.replayWaiting.Load()) }

// SessionRooms returns the rooms of a saved session's entries.
func SessionRooms(entries []string) []string {
	rooms, _, _ := parseSessionEntries(entries, "")
	return rooms
}
