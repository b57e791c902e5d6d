// Package tunnel exposes a user's local port on a reserved subdomain: a
// reservation billed hourly (a subscription of the billing engine), a
// short-lived JWT that lets a tunnel client connect, a broker holding the
// clients' WebSocket connections (a yamux stream multiplexer over
// coder/websocket), and the public ingress that routes requests by Host
// through them. Package tunnel/client is the client side.
//
// # Reservations
//
// A domain is an exclusive subscription (billing.Subscription.Exclusive)
// of kind "domain" whose resource is the subdomain: the domain's ID is the
// subscription's, and the domain row, the subscription and its first
// hour's charge are written in one transaction (Store.ReserveDomain). Of
// two wallets racing for one name exactly one wins; the other is charged
// nothing. A domain is active while its subscription is: a release
// cancels it (no refund) and a lapse for lack of funds makes it Inactive;
// either way the subdomain is free at once, the domain disappears from the
// owner's list (GET answers 404 "domain not found"), and its tunnel is
// closed, on whichever process holds it: the change is published on the
// platform's events.Bus (Options.Events; PostgreSQL's LISTEN/NOTIFY
// across processes) and every process closes its stale tunnels within
// milliseconds (see close.go). The ingress also checks each request's
// tunnel against the active holder of the name, read after the request
// arrived, so a released name never reaches its previous owner's
// service, even before the event arrives.
//
// Choices where the API reference is silent:
//   - subdomains longer than 32 characters, with characters other than
//     lowercase letters, digits and inner hyphens, or equal to a reserved
//     word are refused with "subdomain must be at most 32 characters",
//     "subdomain may contain only lowercase letters, digits and hyphens,
//     and may not start or end with a hyphen" and "NAME is a reserved
//     subdomain" (400); uppercase input is not lowered;
//   - "service_id" is "domain-" and the first 8 hex digits of the ID;
//   - GET /api/domains lists active domains, newest first;
//   - a port is unique among one wallet's active domains (as the
//     reference says); two wallets may use the same port;
//   - a tunnel token carries the domain, subdomain, port, wallet and the
//     domain's port version (bumped by every assign and unassign), so a
//     token issued before a reassignment, release or lapse is refused at
//     connect time;
//   - a tunnel token also names the API key that fetched it
//     (Claims.Credential): the HTTP server refuses it once that key is
//     revoked, and the tunnels it connected are closed when the key is
//     revoked (Service.DisconnectWhere on the revocation's event, and
//     Service.CheckTunnelKeys on every tick as a backstop).
//
// # Bounds of a tunnel
//
// A tunnel's owner pays for one domain, so a tunnel may hold only a
// bounded share of the platform, whatever its client sends. The hub reads
// the client's yamux frame headers (12 bytes: version, type, flags,
// stream ID, length) as they arrive, before yamux does, and closes the
// tunnel at once, as a protocol violation, when the client:
//   - opens a stream (a SYN on a data or window-update frame). Only the
//     platform opens streams; yamux would queue the client's in its
//     accept backlog (1,024), each with a 256 KiB window of data (515 MiB
//     of heap measured for one tunnel), since the hub never accepts them;
//   - has more than [MaxPendingPings] (16) of its pings unanswered, or
//     pings faster than [PingBurst] (32) at once then one per
//     [PingInterval] (1 s). yamux answers each ping from a goroutine that
//     waits up to 30 s to write the answer: a client that sends pings and
//     reads nothing grew the server by hundreds of MB. An honest client
//     pings once per keepalive interval (15 s);
//   - sends a GoAway, a frame type or version yamux does not have, or a
//     data frame longer than the stream window;
//   - sends nothing at all for [HubOptions].IdleTimeout (default 60 s,
//     four keepalive intervals: an honest client's keepalive pings and
//     its answers to the platform's arrive every 15 s).
//
// The owner's other tunnels are not affected: each has its own.
//
// What a tunnel's client sends on a stream waits in the platform's memory
// until the public client takes it, up to the stream's window. The
// platform's window is [HubOptions].StreamWindow (default 512 KiB: yamux's
// initial 256 KiB doubled; the tunnel client keeps 4 MiB windows for
// what it receives), and a tunnel holds at most [HubOptions].MaxStreams
// streams (default 256, above the ingress's 256 connections per client
// address, so one address cannot fill a tunnel; a public connection past
// it waits up to DialTimeout for a stream to close, then gets 502). A
// tunnel's buffered data is therefore at most 256 × 512 KiB = 128 MiB;
// yamux's buffer doubles as it fills (2.03 windows per full stream
// measured), so at most about 256 MiB of heap per tunnel, reached only
// when every stream's public reader stalls while the client sends (a
// stalled reader is cut after the ingress's 30 s write timeout). An idle
// tunnel holds about 71 KB.
package tunnel

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

// Kind is the billing subscription kind of a domain reservation.
const Kind = "domain"

// Defaults of [Options].
const (
	DefaultBaseDomain = "pct.site"
	DefaultHourlyCost = 10 * billing.Cent
	DefaultPortMin    = 10000
	DefaultPortMax    = 10099
	DefaultTokenTTL   = 5 * time.Minute
)

// Public messages, as the API reference words them.
const (
	MsgTooShort         = "subdomain must be at least 2 characters"
	MsgTooLong          = "subdomain must be at most 32 characters"
	MsgBadChars         = "subdomain may contain only lowercase letters, digits and hyphens, and may not start or end with a hyphen"
	MsgInsufficient     = "insufficient credits for domain reservation"
	MsgNoAccount        = "no account found, purchase credits first"
	MsgAssignPortFirst  = "assign a port before connecting the tunnel"
	MsgNotOwner         = "you do not own this domain"
	MsgNotFound         = "domain not found"
	MsgInvalidToken     = "invalid tunnel token"
	MsgNoTunnel         = "no tunnel connected"
	MsgSubdomainMissing = "subdomain is required"
)

// ReservedWords may not be reserved as subdomains.
var ReservedWords = []string{"www", "api", "mail", "ftp", "admin", "tunnel", "ns1", "ns2", "mx", "smtp", "imap", "pop", "app", "dev", "staging", "test"}

// Domain is a reserved subdomain.
type Domain struct {
	// ID is the domain's UUID, also the ID of the subscription paying
	// for it.
	ID        string
	Account   string
	Subdomain string
	// LocalPort is the port on the user's machine traffic goes to; 0
	// when unassigned.
	LocalPort uint16
	// PortVersion counts the port's assignments and unassignments; a
	// tunnel token is valid only for the version it was issued for.
	PortVersion int64
	CreatedAt   time.Time
	// HourlyCost, PrepaidUntil and Active come from the subscription.
	HourlyCost   billing.MicroCents
	PrepaidUntil time.Time
	Active       bool
}

// ServiceID is the domain's service identifier as the API shows it.
func (d Domain) ServiceID() string {
	id := strings.ReplaceAll(d.ID, "-", "")
	return "domain-" + id[:min(8, len(id))]
}

// Key is the domain's position in a list (page.Key): newest first by
// CreatedAt, ties by ID.
func Key(d Domain) page.Key { return page.Key{Order: d.CreatedAt.UnixMicro(), ID: d.ID} }

// Domains list pages.
const (
	PageSize = 100
	PageMax  = 1000
)

// Store keeps domain reservations. A backend value implements it beside
// billing.Store; its reservations are billing subscriptions in the same
// store.
type Store interface {
	// ReserveDomain stores d, the subscription sub paying for it (whose
	// ID is d.ID) and sub's first charge, in one transaction: if any
	// fails nothing is written or charged. sub is Exclusive on the
	// subdomain; fault.Conflict when an active domain holds it,
	// fault.InsufficientFunds when the balance cannot cover first. The
	// returned domain has the subscription's fields filled.
	ReserveDomain(ctx context.Context, d Domain, sub billing.Subscription, first billing.Posting) (Domain, error)
	// GetDomain returns a domain in any state, or fault.NotFound.
	GetDomain(ctx context.Context, id string) (Domain, error)
	// ActiveDomain returns the active domain of a subdomain, or
	// fault.NotFound.
	ActiveDomain(ctx context.Context, subdomain string) (Domain, error)
	// ListDomains returns a page of the account's active domains, newest
	// first (see Key).
	ListDomains(ctx context.Context, account string, r page.Request) (page.Page[Domain], error)
	// AssignPort sets the active domain's port and bumps its port
	// version. fault.NotFound if the account has no such active domain;
	// fault.Conflict if another of the account's active domains has the
	// port (a lapsed or released one's port is free).
	AssignPort(ctx context.Context, account, id string, port uint16) (Domain, error)
	// UnassignPort clears the active domain's port and bumps its port
	// version; fault.NotFound if the account has no such active domain.
	UnassignPort(ctx context.Context, account, id string) (Domain, error)
	// ReleaseDomain cancels the active domain's subscription (no refund)
	// and clears its port, in one transaction; fault.NotFound if the
	// account has no such active domain.
	ReleaseDomain(ctx context.Context, account, id string, now time.Time) (Domain, error)
}

// ValidateSubdomain checks a requested subdomain against the rules.
func ValidateSubdomain(s string) error {
	switch {
	case s == "":
		return fault.New(fault.Invalid, MsgSubdomainMissing)
	case len(s) < 2:
		return fault.New(fault.Invalid, MsgTooShort)
	case len(s) > 32:
		return fault.New(fault.Invalid, MsgTooLong)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1
		if !ok {
			return fault.New(fault.Invalid, MsgBadChars)
		}
	}
	for _, w := range ReservedWords {
		if s == w {
			return fault.New(fault.Invalid, s+" is a reserved subdomain")
		}
	}
	return nil
}

// portConflict is the message of an assignment refused for a port
// another domain of the wallet has.
func portConflict(port uint16, holder string) string {
	return fmt.Sprintf("port %d is already assigned to %s", port, holder)
}
