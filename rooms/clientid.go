package rooms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/roomcast/roomcast/rooms/sign"
)

// A client id is public: it is in every envelope its client sends. Using it
// (as a stream's or poll's client, or as the sender of an event) needs a
// proof bound to the caller who first used it: the stream or poll that
// binds a free id mints a random secret with it and hands out the proof
// "<client>.<secret>". The binding lives in the backbone, shared by every
// instance, for HubOptions.ClientTTL after its last use; a user's binding
// is theirs whatever the secret (their token proves them), an anonymous
// caller's is the secret's. Anyone else claiming the id gets
// ErrClientInUse. A proof is no MAC, and so has no key of rooms/sign: its
// secret is random and checked against the stored one (sign.Equal).

// ClientRegistry is implemented by backbones that bind client ids to their
// owners, for every instance sharing the backbone.
type ClientRegistry interface {
	// BindClient binds client to owner with secret for ttl when the id is
	// free (never bound, or its binding expired), or renews the binding
	// when owner holds it already. It returns the binding's secret: the
	// given one for a new binding (created is set), the stored one for a
	// renewal. It returns ErrClientInUse when another owner holds the id,
	// and ErrClientsFull when a new binding would pass the store's bound.
	BindClient(ctx context.Context, client, owner, secret string, ttl time.Duration) (bound string, created bool, err error)
	// UnbindClient frees client's binding when owner holds it with
	// secret: a request refused after it bound a new id takes it back.
	UnbindClient(ctx context.Context, client, owner, secret string) error
	// ClientBinding returns the owner and secret of client's binding; ok
	// is false when it is free.
	ClientBinding(ctx context.Context, client string) (owner, secret string, ok bool, err error)
	// ClientBindings returns how many bindings are held.
	ClientBindings(ctx context.Context) (int, error)
}

// DefaultMaxClientBindings bounds a backbone's client-id bindings when its
// options do not.
const DefaultMaxClientBindings = 1 << 20

// ValidClientID reports whether id is 8 to 64 URL-safe characters.
func ValidClientID(id string) bool {
	if len(id) < 8 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseClientProof splits a proof "<client>.<secret>"; ok is false for
// anything else.
func parseClientProof(proof string) (client, secret string, ok bool) {
	client, secret, ok = strings.Cut(proof, ".")
	if !ok || !ValidClientID(client) || !ValidClientID(secret) {
		return "", "", false
	}
	return client, secret, true
}

// IsClientProof reports whether s has the shape of a client proof (and so
// is not a connection id).
func IsClientProof(s string) bool { return strings.Contains(s, ".") }

// proofSecret returns the secret of a client proof, "" for anything else.
func proofSecret(proof string) string {
	_, secret, _ := parseClientProof(proof)
	return secret
}

// clientOwner is who a binding belongs to: the server, a user, or the
// anonymous holder of secret.
func clientOwner(id Identity, secret string) string {
	switch {
	case id.Server:
		return "s:"
	case id.User != "":
		return "u:" + id.User
	}
	return "a:" + secret
}

// connectionHolder is who may name a connection as the sender of an event:
// its user, the server, or (anonymous connections) whoever holds its id,
// itself a secret.
func connectionHolder(id Identity) string {
	switch {
	case id.Server:
		return "s:"
	case id.User != "":
		return "u:" + id.User
	}
	return "a:"
}

// claimClient binds the client id a stream or poll uses to its caller and
// returns the id (a fresh one when client and proof name none) and its
// proof. A proof names the id when client does not; a proof for another id
// than client is ignored. A request refused after the claim calls undo,
// which takes back a binding the claim created (nothing else: a binding
// renewed was in use before), so that a refusal leaves none behind.
func (h *Hub) claimClient(ctx context.Context, id Identity, caller, client, proof string) (_, _ string, undo func(), err error) {
	undo = func() {}
	client = claimedClient(client, proof)
	var secret string
	if c, s, ok := parseClientProof(proof); ok && c == client {
		secret = s
	}
	if h.clients == nil {
		return client, "", undo, nil
	}
	if secret == "" {
		secret = randomID(16)
	}
	// Counted against the caller first, so that one caller cannot fill
	// the backbone's store (its bound is everyone's); a binding refused
	// by the backbone is not counted.
	taking, ok := h.bindings.Hold(caller, time.Now().Add(h.opts.ClientTTL), client)
	if !ok {
		return "", "", nil, fmt.Errorf("%w: at most %d client ids of one caller are bound at once (each for %s after its last use); reuse your id with its proof",
			ErrLimitExceeded, h.opts.MaxClientIDsPerCaller, h.opts.ClientTTL)
	}
	owner := clientOwner(id, secret)
	bound, created, err := h.clients.BindClient(ctx, client, owner, secret, h.opts.ClientTTL)
	if err != nil {
		h.bindings.Undo(taking)
	}
	switch {
	case errors.Is(err, ErrClientInUse):
		return "", "", nil, fmt.Errorf("%w: client id %q belongs to another caller; send its proof or use another id", ErrClientInUse, client)
	case errors.Is(err, ErrClientsFull):
		return "", "", nil, err
	case err != nil:
		return "", "", nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	undo = func() {
		// Only while no later request of the caller renewed the id: two
		// streams of one user may claim it at once, and the one still
		// running holds the binding the failed one created.
		if undone := h.bindings.Undo(taking); created && len(undone) > 0 {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = h.clients.UnbindClient(ctx, client, owner, bound)
		}
	}
	return client, client + "." + bound, undo, nil
}

// claimedClient is the client id a stream or poll names: client, else the
// one its proof names, else a fresh one.
func claimedClient(client, proof string) string {
	if client != "" {
		return client
	}
	if c, _, ok := parseClientProof(proof); ok {
		return c
	}
	return NewClientID()
}

// renewClient keeps a live stream's or poller's client id bound.
func (h *Hub) renewClient(ctx context.Context, id Identity, caller, proof string) error {
	client, secret, ok := parseClientProof(proof)
	if h.clients == nil || !ok {
		return nil
	}
	// Renewed in the caller's count too: refused only when the count
	// lapsed meanwhile and the caller is at its bound.
	if !h.bindings.Take(caller, time.Now().Add(h.opts.ClientTTL), client) {
		return fmt.Errorf("%w: at most %d client ids of one caller are bound at once", ErrLimitExceeded, h.opts.MaxClientIDsPerCaller)
	}
	_, _, err := h.clients.BindClient(ctx, client, clientOwner(id, secret), secret, h.opts.ClientTTL)
	return err
}

// ProveClient resolves what a publisher sends as Roomcast-Connection to the
// client id it proves: a client proof from a stream or poll, or the id of
// a live connection on any instance. Either must belong to caller: another
// caller's is ErrClientInUse; an unknown or expired one, or a connection
// that no live instance holds, is ErrUnknownConnection.
func (h *Hub) ProveClient(ctx context.Context, caller Identity, proof string) (string, error) {
	if !IsClientProof(proof) {
		return h.clientOf(ctx, caller, proof)
	}
	client, secret, ok := parseClientProof(proof)
	if !ok || h.clients == nil {
		return "", fmt.Errorf("%w: not a client proof", ErrUnknownConnection)
	}
	owner, stored, ok, err := h.clients.ClientBinding(ctx, client)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if !ok || !sign.Equal([]byte(stored), []byte(secret)) {
		return "", fmt.Errorf("%w: the client proof is unknown or expired", ErrUnknownConnection)
	}
	if owner != clientOwner(caller, secret) {
		return "", fmt.Errorf("%w: client id %q belongs to another caller", ErrClientInUse, client)
	}
	return client, nil
}

// clientOf returns the client id of the live connection id, wherever it is
// held, when caller may speak for it.
func (h *Hub) clientOf(ctx context.Context, caller Identity, id string) (string, error) {
	if conn, err := h.Lookup(id); err == nil {
		if connectionHolder(conn.Identity()) != connectionHolder(caller) {
			return "", fmt.Errorf("%w: the connection belongs to another caller", ErrClientInUse)
		}
		return conn.Client, nil
	}
	if h.dir == nil {
		return "", ErrUnknownConnection
	}
	info, ok, err := h.dir.LookupConnection(ctx, id)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if !ok {
		return "", ErrUnknownConnection
	}
	if info.Holder != connectionHolder(caller) {
		return "", fmt.Errorf("%w: the connection belongs to another caller", ErrClientInUse)
	}
	return info.Client, nil
}

// ClientIDsHeld returns how many client ids this instance counts as bound
// for its callers (HubOptions.MaxClientIDsPerCaller).
func (h *Hub) ClientIDsHeld() int { return h.bindings.Held() }

// ClientBindings returns how many client ids the backbone holds bound (0
// when it binds none).
func (h *Hub) ClientBindings(ctx context.Context) (int, error) {
	if h.clients == nil {
		return 0, nil
	}
	return h.clients.ClientBindings(ctx)
}
