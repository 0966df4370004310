package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// identify authenticates r. Streams and polls (auth.Subscribing) may carry
// a ticket, a bearer token, the roomcast_token cookie or, when allowed, a
// query token; every state-changing request only a bearer token or the API
// key, so that no other site can act with a browser's cookie.
func (s *Server) identify(r *http.Request, mode auth.Credentials) (rooms.Identity, error) {
	if s.opts.Auth == nil {
		return rooms.Identity{}, nil
	}
	return s.opts.Auth.FromRequest(r, mode, s.claim)
}

// claim spends a single-use key on the backbone, shared by every instance.
func (s *Server) claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	c := s.hub.Claimer()
	if c == nil {
		return false, errors.New("the backbone cannot claim single-use keys")
	}
	return c.ClaimOnce(ctx, key, ttl)
}

// checkOrigin refuses a state-changing request sent by a page of another
// origin than the relay's own (scheme, host and port; the host is one
// checkHost allowed) or an allowed one. Requests without Origin (curl,
// backends) pass: they carry no ambient browser credentials.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" || s.originAllowed(origin) || s.sameOrigin(origin, r) {
		return nil
	}
	return originRefused(origin)
}

// originRefused is the answer to a request, or a preflight, from a page of
// an origin the relay does not allow.
func originRefused(origin string) error {
	return errorf(codeForbidden, "requests from origin %s are not allowed (the relay's ROOMCAST_ALLOWED_ORIGINS does not list it)", origin)
}

func (s *Server) originAllowed(origin string) bool {
	return slices.Contains(s.opts.AllowedOrigins, "*") || slices.Contains(s.opts.AllowedOrigins, origin)
}

// cors answers preflights and marks responses readable by allowed origins.
// Credentials are allowed only for origins listed by name, never for "*".
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if len(s.opts.AllowedOrigins) > 0 {
			// Every answer depends on Origin, also one without CORS
			// headers: a cache must not serve an answer stored for a
			// request without Origin (or of another origin) to an
			// allowed one, which the browser would then refuse.
			w.Header().Add("Vary", "Origin")
		}
		if origin != "" && preflight && !s.originAllowed(origin) && !s.sameOrigin(origin, r) {
			// No route answers OPTIONS: without this a refused preflight
			// would read 405 method_not_allowed, hiding the reason.
			writeError(w, originRefused(origin))
			return
		}
		if origin == "" || s.sameOrigin(origin, r) || !s.originAllowed(origin) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		if slices.Contains(s.opts.AllowedOrigins, origin) {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		} else {
			h.Set("Access-Control-Allow-Origin", "*")
		}
		h.Set("Access-Control-Expose-Headers", "Retry-After, Idempotent-Replayed, Idempotency-Key")
		if preflight {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Roomcast-Connection, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

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
