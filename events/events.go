// Package events carries what happened on one server process to every
// process of the platform: a revoked key, a domain released, lapsed or
// reassigned. Services publish an [Event] on a [Bus] after the change is
// stored; every process's subscribers act on it (close the streams and
// tunnels the change ends), the publishing process's own before Publish
// returns.
//
// Two buses exist. [Local] reaches the subscribers of one process: it is
// the bus of the memory and SQLite stores, which one process owns. A
// store shared by several processes provides its own, found by type
// assertion on the store (EventBus() events.Bus): PostgreSQL's
// (storage/postgres) delivers to this process at once and to the others
// through LISTEN/NOTIFY, on the connection that already listens for
// personas' events.
//
// Choices:
//
//   - Delivery is at most once and best effort: a process whose listener
//     lost its connection misses what was published meanwhile. When it
//     listens again its subscribers get a [Resync] event, on which they
//     re-read what they hold from the store (the tunnel service checks
//     every tunnel; persona streams re-authenticate on every message
//     anyway). Subscribers must be idempotent: an event may arrive twice.
//   - An event is small and names things by ID (a notification holds at
//     most 8000 bytes); a subscriber reads the rest from the store.
//   - Handlers run on the publisher's goroutine (Local) or the listener's
//     (PostgreSQL) and must return quickly; each gets a context bounded by
//     [HandlerTimeout].
//
// Later work (signed webhooks, several nodes serving any tunnel) builds on
// the same Bus: new event types are new Type constants.
package events

import (
	"context"
	"sync"
	"time"
)

// Event types.
const (
	// KeyRevoked: the client key Subject of wallet Account was revoked.
	KeyRevoked = "key.revoked"
	// MasterKeyReplaced: wallet Account logged in or regenerated its
	// master key; every master key but Keep (a credential ID, see
	// auth.Principal.Credential) is revoked.
	MasterKeyReplaced = "master_key.replaced"
	// DomainChanged: domain Subject (subdomain Name, wallet Account) was
	// released, lapsed, or had its port assigned or unassigned; its
	// tunnels connected with an older state must close.
	DomainChanged = "domain.changed"
	// Resync: this process may have missed events (its listener
	// reconnected); re-read the state you hold.
	Resync = "resync"
)

// HandlerTimeout bounds one handler call's context.
const HandlerTimeout = 10 * time.Second

// Event is one change other processes must act on.
type Event struct {
	// Type is one of the constants above.
	Type string `json:"type"`
	// Account is the wallet concerned.
	Account string `json:"account,omitempty"`
	// Subject is the key or domain ID.
	Subject string `json:"subject,omitempty"`
	// Name is a domain's subdomain.
	Name string `json:"name,omitempty"`
	// Keep is, for MasterKeyReplaced, the credential that stays valid.
	Keep string `json:"keep,omitempty"`
}

// Handler acts on an event.
type Handler func(ctx context.Context, e Event)

// Bus publishes events to every process's subscribers.
type Bus interface {
	// Publish delivers e to this process's subscribers before it
	// returns, and to other processes' shortly after (a bus of one
	// process has none).
	Publish(ctx context.Context, e Event) error
	// Subscribe calls h for every event published from now on, until
	// the returned function is called.
	Subscribe(h Handler) (unsubscribe func())
}

// Local is the Bus of one process. The zero value is ready to use.
type Local struct {
	mu   sync.Mutex
	subs map[*Handler]struct{}
}

var _ Bus = (*Local)(nil)

// NewLocal returns an empty bus.
func NewLocal() *Local { return &Local{} }

// Publish calls every subscriber with e, in turn, and returns.
func (b *Local) Publish(ctx context.Context, e Event) error {
	b.Deliver(ctx, e)
	return nil
}

// Deliver calls every subscriber with e; a bus that spans processes
// delivers what it receives with it.
func (b *Local) Deliver(ctx context.Context, e Event) {
	b.mu.Lock()
	hs := make([]Handler, 0, len(b.subs))
	for h := range b.subs {
		hs = append(hs, *h)
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), HandlerTimeout)
	defer cancel()
	for _, h := range hs {
		h(ctx, e)
	}
}

// Subscribe adds h.
func (b *Local) Subscribe(h Handler) func() {
	p := &h
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*Handler]struct{}{}
	}
	b.subs[p] = struct{}{}
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.subs, p)
		b.mu.Unlock()
	}
}

// Len is the number of subscribers.
func (b *Local) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
