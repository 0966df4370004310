package relay

// StreamerTimers returns how many timers of the hijacked streams' writer
// are armed: each stream's one timer and the coalescing flush.
func StreamerTimers(s *Server) int64 { return s.streamer().live.Load() }
