package relay

import (
	"fmt"
	"net/http"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// ticketAnswer is the 201 body of POST /v1/tickets.
type ticketAnswer struct {
	Ticket    string `json:"ticket"`
	ExpiresIn int    `json:"expires_in"`
}

// ticket exchanges a bearer token for a single-use ticket that an
// EventSource, which cannot send headers, passes as ?ticket=.
func (s *Server) ticket(w http.ResponseWriter, r *http.Request) {
	if s.opts.Auth == nil {
		writeError(w, errorf(codeNotFound, "this relay has no authentication configured"))
		return
	}
	id, err := s.identify(r, auth.StateChanging)
	if err == nil && id.Anonymous() {
		// The API key is known but refused by IssueTicket (403).
		err = errorf(codeUnauthenticated, "a ticket needs a user's bearer token")
	}
	if err == nil {
		err = s.checkOrigin(r)
	}
	if err == nil {
		err = s.limitRequest(r, id, "ticket")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	t, ttl, err := s.opts.Auth.IssueTicket(id)
	// A ticket counts against its user (rateKey: a development user's
	// address) until its key, once spent, is forgotten: the bound holds
	// the backbone's claims too.
	if err == nil && !s.tickets.Take(s.rateKey(r, id), time.Now().Add(s.opts.Auth.TicketHeld(ttl)), t) {
		// The ticket is dropped unsent: nothing is held for it.
		err = fmt.Errorf("%w: at most %d unexpired tickets per user", rooms.ErrLimitExceeded, s.opts.Limits.MaxTicketsPerUser)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ticketAnswer{Ticket: t, ExpiresIn: max(int(ttl/time.Second), 1)})
}
