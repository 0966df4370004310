package rooms

// The backbone's optional parts the edge uses, each behind a narrow method:
// the edge never holds the backbone itself, so no request can reach it
// around the hub's and the Publisher's rules.

// Claimer returns the backbone's single-use key store, or nil when it has
// none.
func (h *Hub) Claimer() Claimer {
	c, _ := BackboneAs[Claimer](h.bb)
	return c
}

// Limiter returns the backbone's shared rate limits, or nil when it keeps
// none (limits are then the instance's own).
func (h *Hub) Limiter() Limiter {
	l, _ := BackboneAs[Limiter](h.bb)
	return l
}

// SlotCounter returns the backbone's shared connection slots, or nil when
// it counts none.
func (h *Hub) SlotCounter() SlotCounter {
	c, _ := BackboneAs[SlotCounter](h.bb)
	return c
}

// BackboneGauges are the counts of what a backbone keeps in this process,
// for metrics; a nil field is a count the backbone does not keep here.
type BackboneGauges struct {
	// Channels the backbone keeps (history or subscribers).
	Channels func() int
	// FreedChannels whose last position is remembered by name.
	FreedChannels func() int
	// PresenceEntries, members and users in their grace period.
	PresenceEntries func() int
	// Keys are the idempotency keys, claims and sessions remembered.
	Keys func() (idempotency, claims, sessions int)
}

// BackboneGauges returns the backbone's gauges.
func (h *Hub) BackboneGauges() BackboneGauges {
	var g BackboneGauges
	if bb, ok := BackboneAs[interface{ Channels() int }](h.bb); ok {
		g.Channels = bb.Channels
	}
	if bb, ok := BackboneAs[interface{ FreedChannels() int }](h.bb); ok {
		g.FreedChannels = bb.FreedChannels
	}
	if bb, ok := BackboneAs[interface{ PresenceEntries() int }](h.bb); ok {
		g.PresenceEntries = bb.PresenceEntries
	}
	if bb, ok := BackboneAs[interface {
		Keys() (idempotency, claims, sessions int)
	}](h.bb); ok {
		g.Keys = bb.Keys
	}
	return g
}
