// Package tunnel will expose a user's local port on a reserved subdomain
// through a WebSocket tunnel: a stream multiplexer over coder/websocket,
// public ingress routed by Host, and a client that reconnects with backoff.
//
// Not implemented yet: this package holds the types and interfaces the
// rest of the SDK is shaped around, so that domains, billing (hourly
// subscriptions, see billing.SubscriptionStore) and several broker
// processes sharing one PostgreSQL fit without redesign. Nothing here
// serves traffic.
package tunnel

import (
	"context"
	"net"
	"time"
)

// Domain is a reserved subdomain.
type Domain struct {
	ID        string
	Account   string
	Subdomain string
	// LocalPort is the port on the user's machine traffic goes to; 0 when
	// unassigned. The API limits it to 10000-10099.
	LocalPort uint16
	// SubscriptionID is the billing subscription paying for the domain.
	SubscriptionID string
	CreatedAt      time.Time
}

// DomainStore keeps domain reservations. Reserving is first come, first
// served: a subdomain is unique among active reservations.
type DomainStore interface {
	CreateDomain(ctx context.Context, d Domain) error
	GetDomain(ctx context.Context, id string) (Domain, error)
	DomainBySubdomain(ctx context.Context, subdomain string) (Domain, error)
	ListDomains(ctx context.Context, account string) ([]Domain, error)
	AssignPort(ctx context.Context, account, id string, port uint16) error
	DeleteDomain(ctx context.Context, account, id string) error
}

// Broker connects public requests to connected tunnel clients. With several
// server processes, a broker either holds the client's connection itself
// or forwards to the peer process that does (a subdomain -> node registry).
type Broker interface {
	// Dial opens a stream to the tunnel client serving subdomain, or
	// returns fault.Unavailable when no client is connected.
	Dial(ctx context.Context, subdomain string) (net.Conn, error)
	// Active reports whether a client is connected for the domain.
	Active(ctx context.Context, domainID string) (bool, error)
}
