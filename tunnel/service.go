package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/events"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

// TunnelBroker connects public requests to connected tunnel clients.
//
// [Hub] holds the connections of this process. With several server
// processes, a broker for the cluster keeps a registry of which process
// holds each subdomain's tunnel (in the shared database) and forwards a
// Dial that reached another process to the one holding the tunnel; the
// ingress and the service see only this interface.
type TunnelBroker interface {
	// Dial opens a stream to the local service behind the subdomain's
	// tunnel; fault.Unavailable "no tunnel connected" when none is, or
	// when the client could not reach its local port (the error then
	// says why).
	Dial(ctx context.Context, subdomain string) (net.Conn, error)
	// Connected reports whether a tunnel is connected for the domain.
	Connected(ctx context.Context, domainID string) (bool, error)
	// Disconnect closes the domain's tunnel, if one is connected.
	Disconnect(ctx context.Context, domainID string) error
}

// Options configures a [Service]. Zero fields take the documented
// defaults.
type Options struct {
	// BaseDomain is the domain subdomains are reserved under; empty
	// means DefaultBaseDomain.
	BaseDomain string
	// HourlyCost is a reservation's price per hour; zero means
	// DefaultHourlyCost.
	HourlyCost billing.MicroCents
	// PortMin and PortMax bound the local ports; zero means
	// DefaultPortMin and DefaultPortMax.
	PortMin, PortMax uint16
	// Signer issues and checks tunnel tokens; nil means one with a random
	// key of this process (see NewSigner).
	Signer *Signer
	// Broker holds the tunnels; nil means a new [Hub].
	Broker TunnelBroker
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Events receives a DomainChanged event for every release, lapse,
	// assignment and unassignment, so that every process closes the
	// domain's stale tunnels (see HandleEvent). Nil publishes nothing.
	Events events.Bus
}

// Service is domain reservations and their tunnels.
type Service struct {
	store   Store
	billing *billing.Service
	base    string
	cost    billing.MicroCents
	pmin    uint16
	pmax    uint16
	signer  *Signer
	broker  TunnelBroker
	now     func() time.Time
	log     *slog.Logger
	events  events.Bus
	routes  routeChecks // the ingress's reads of the active domain
}

// NewService returns a service over store, charging through bill. Register
// its [Service.OnLapse] as billing's lapse handler of [Kind].
func NewService(store Store, bill *billing.Service, opts Options) (*Service, error) {
	s := &Service{store: store, billing: bill, base: opts.BaseDomain, cost: opts.HourlyCost,
		pmin: opts.PortMin, pmax: opts.PortMax, signer: opts.Signer, broker: opts.Broker, now: opts.Now, log: opts.Logger, events: opts.Events}
	if s.base == "" {
		s.base = DefaultBaseDomain
	}
	s.base = strings.ToLower(strings.Trim(s.base, "."))
	if s.cost <= 0 {
		s.cost = DefaultHourlyCost
	}
	if s.pmin == 0 {
		s.pmin = DefaultPortMin
	}
	if s.pmax == 0 {
		s.pmax = DefaultPortMax
	}
	if s.pmin > s.pmax {
		return nil, errors.New("tunnel: PortMin is above PortMax")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.signer == nil {
		sg, err := NewSigner(nil, 0, s.now)
		if err != nil {
			return nil, err
		}
		s.signer = sg
	}
	if s.broker == nil {
		s.broker = NewHub(HubOptions{Logger: s.log})
	}
	return s, nil
}

// BaseDomain is the domain subdomains are reserved under.
func (s *Service) BaseDomain() string { return s.base }

// HourlyCost is a reservation's price per hour.
func (s *Service) HourlyCost() billing.MicroCents { return s.cost }

// PortRange is the range of local ports, inclusive.
func (s *Service) PortRange() (lo, hi uint16) { return s.pmin, s.pmax }

// Broker is the service's tunnel broker.
func (s *Service) Broker() TunnelBroker { return s.broker }

// Signer is the service's token signer.
func (s *Service) Signer() *Signer { return s.signer }

// FullDomain is subdomain under the base domain.
func (s *Service) FullDomain(subdomain string) string { return subdomain + "." + s.base }

// Reserve reserves subdomain for account, charging the first hour.
func (s *Service) Reserve(ctx context.Context, account, subdomain string) (Domain, error) {
	if err := ValidateSubdomain(subdomain); err != nil {
		return Domain{}, err
	}
	p, err := s.billing.Ledger().Entries(ctx, account, billing.EntryFilter{}, page.Request{Limit: 1})
	if err != nil {
		return Domain{}, err
	}
	if len(p.Items) == 0 {
		return Domain{}, fault.New(fault.InsufficientFunds, MsgNoAccount)
	}
	sub, first, err := s.billing.Prepare(billing.SubscribeRequest{
		Account: account, Kind: Kind, Resource: subdomain, Type: billing.Domain, HourlyCost: s.cost,
		Description: "Domain: " + s.FullDomain(subdomain), Exclusive: true,
	})
	if err != nil {
		return Domain{}, err
	}
	d := Domain{ID: sub.ID, Account: account, Subdomain: subdomain, CreatedAt: sub.CreatedAt}
	d, err = s.store.ReserveDomain(ctx, d, sub, first)
	switch fault.CodeOf(err) {
	case fault.Unknown:
		if err != nil {
			return Domain{}, err
		}
	case fault.InsufficientFunds:
		return Domain{}, fault.Wrap(err, fault.InsufficientFunds, MsgInsufficient)
	case fault.Conflict:
		return Domain{}, fault.Wrap(err, fault.Conflict, s.FullDomain(subdomain)+" is already reserved")
	default:
		return Domain{}, err
	}
	s.billing.Started(ctx, sub)
	s.log.InfoContext(ctx, "domain reserved", "id", d.ID, "subdomain", subdomain, "account", account)
	return d, nil
}

// List returns the account's active domains, newest first.
func (s *Service) List(ctx context.Context, account string) ([]Domain, error) {
	var out []Domain
	r := page.Request{Limit: PageMax}
	for {
		p, err := s.store.ListDomains(ctx, account, r)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Items...)
		if !p.More {
			return out, nil
		}
		r.After = p.Next
	}
}

// Get returns the account's active domain: fault.NotFound "domain not
// found" if there is no active domain with that ID, fault.Forbidden "you
// do not own this domain" if another wallet has it.
func (s *Service) Get(ctx context.Context, account, id string) (Domain, error) {
	d, err := s.store.GetDomain(ctx, id)
	if fault.CodeOf(err) == fault.NotFound || err == nil && !d.Active {
		return Domain{}, fault.New(fault.NotFound, MsgNotFound)
	}
	if err != nil {
		return Domain{}, err
	}
	if d.Account != account {
		return Domain{}, fault.New(fault.Forbidden, MsgNotOwner)
	}
	return d, nil
}

// notFound maps a store's NotFound (the domain went away between Get and
// the write) to the API's message.
func notFound(err error) error {
	if fault.CodeOf(err) == fault.NotFound {
		return fault.Wrap(err, fault.NotFound, MsgNotFound)
	}
	return err
}

// Assign sets the domain's local port. A connected tunnel is closed: its
// token was for the old port.
func (s *Service) Assign(ctx context.Context, account, id string, port int) (Domain, error) {
	if port < int(s.pmin) || port > int(s.pmax) {
		return Domain{}, fault.Newf(fault.Invalid, "port must be between %d and %d", s.pmin, s.pmax)
	}
	d, err := s.Get(ctx, account, id)
	if err != nil {
		return Domain{}, err
	}
	if d.LocalPort == uint16(port) {
		return d, nil
	}
	nd, err := s.store.AssignPort(ctx, account, id, uint16(port))
	if fault.CodeOf(err) == fault.Conflict {
		holder := "another domain"
		if all, lerr := s.List(ctx, account); lerr == nil {
			for _, o := range all {
				if o.LocalPort == uint16(port) && o.ID != id {
					holder = s.FullDomain(o.Subdomain)
				}
			}
		}
		return Domain{}, fault.Wrap(err, fault.Conflict, portConflict(uint16(port), holder))
	}
	if err != nil {
		return Domain{}, notFound(err)
	}
	s.disconnect(ctx, id)
	s.publish(ctx, nd)
	return nd, nil
}

// Unassign clears the domain's port and closes its tunnel.
func (s *Service) Unassign(ctx context.Context, account, id string) (Domain, error) {
	if _, err := s.Get(ctx, account, id); err != nil {
		return Domain{}, err
	}
	d, err := s.store.UnassignPort(ctx, account, id)
	if err != nil {
		return Domain{}, notFound(err)
	}
	s.disconnect(ctx, id)
	s.publish(ctx, d)
	return d, nil
}

// Token is a tunnel token and what it is for.
type Token struct {
	Token     string
	ExpiresAt time.Time
	Domain    Domain
}

// Token issues a tunnel token for the account's domain, which must have a
// port (fault.Invalid "assign a port before connecting the tunnel").
func (s *Service) Token(ctx context.Context, account, id string) (Token, error) {
	return s.TokenFor(ctx, account, id, "")
}

// TokenFor is Token for a request authenticated with the key named
// credential (auth.Principal.Credential): the token carries it, and the
// tunnel it connects is closed when that key is revoked
// (DisconnectWhere).
func (s *Service) TokenFor(ctx context.Context, account, id, credential string) (Token, error) {
	d, err := s.Get(ctx, account, id)
	if err != nil {
		return Token{}, err
	}
	if d.LocalPort == 0 {
		return Token{}, fault.New(fault.Invalid, MsgAssignPortFirst)
	}
	tok, exp, err := s.signer.IssueFor(d, credential)
	if err != nil {
		return Token{}, err
	}
	return Token{Token: tok, ExpiresAt: exp, Domain: d}, nil
}

// Release cancels the domain's reservation (no refund), frees the
// subdomain and closes its tunnel.
func (s *Service) Release(ctx context.Context, account, id string) error {
	if _, err := s.Get(ctx, account, id); err != nil {
		return err
	}
	d, err := s.store.ReleaseDomain(ctx, account, id, s.now())
	if err != nil {
		return notFound(err)
	}
	s.disconnect(ctx, id)
	s.publish(ctx, d)
	s.log.InfoContext(ctx, "domain released", "id", id, "account", account)
	return nil
}

// OnLapse is billing's lapse handler for [Kind]: the domain's tunnel is
// closed (the subdomain is already free).
func (s *Service) OnLapse(ctx context.Context, sub billing.Subscription) {
	s.log.InfoContext(ctx, "domain lapsed", "id", sub.ID, "subdomain", sub.Resource, "account", sub.Account)
	s.disconnect(ctx, sub.ID)
	s.publish(ctx, Domain{ID: sub.ID, Account: sub.Account, Subdomain: sub.Resource})
}

func (s *Service) disconnect(ctx context.Context, id string) {
	if err := s.broker.Disconnect(ctx, id); err != nil {
		s.log.WarnContext(ctx, "closing a tunnel failed", "domain", id, "err", err)
	}
}

// Connected reports whether the domain's tunnel is connected.
func (s *Service) Connected(ctx context.Context, id string) bool {
	ok, err := s.broker.Connected(ctx, id)
	return err == nil && ok
}

// Authorize checks a tunnel token at connect time against the stored
// domain: it must be active, still the token's wallet's, with the port and
// port version the token was issued for. Anything else is
// fault.Unauthenticated "invalid tunnel token".
func (s *Service) Authorize(ctx context.Context, token string) (Domain, error) {
	d, _, err := s.AuthorizeToken(ctx, token)
	return d, err
}

// AuthorizeToken is Authorize that also returns the token's claims (the
// caller checks that the key that fetched it, Claims.Credential, is still
// valid).
func (s *Service) AuthorizeToken(ctx context.Context, token string) (Domain, Claims, error) {
	c, err := s.signer.Parse(token)
	if err != nil {
		return Domain{}, Claims{}, err
	}
	d, err := s.store.GetDomain(ctx, c.DomainID)
	if fault.CodeOf(err) == fault.NotFound {
		return Domain{}, Claims{}, fault.New(fault.Unauthenticated, MsgInvalidToken)
	}
	if err != nil {
		return Domain{}, Claims{}, err
	}
	if !d.Active || d.Account != c.Wallet || d.Subdomain != c.Subdomain || d.LocalPort != c.Port || d.PortVersion != c.PortVersion {
		return Domain{}, Claims{}, fault.New(fault.Unauthenticated, MsgInvalidToken)
	}
	return d, c, nil
}

// Route returns the active domain a public request's Host names
// (SUBDOMAIN.BASE, any port, any letter case), or fault.NotFound.
func (s *Service) Route(ctx context.Context, host string) (Domain, error) {
	sub, ok := s.subdomainOf(host)
	if !ok {
		return Domain{}, fault.New(fault.NotFound, MsgNotFound)
	}
	return s.store.ActiveDomain(ctx, sub)
}

// subdomainOf returns the subdomain a Host names, if it is a valid one
// under the base domain.
func (s *Service) subdomainOf(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	sub, ok := strings.CutSuffix(host, "."+s.base)
	if !ok || strings.Contains(sub, ".") || ValidateSubdomain(sub) != nil {
		return "", false
	}
	return sub, true
}

// CheckTunnels closes the tunnels of this process whose domain is no
// longer active or whose port changed, as another process may have
// lapsed, released or reassigned it (this process's own changes close
// them at once). The platform runs it on every tick. It needs a broker
// that lists its tunnels (Tunnels() []Domain, as Hub does).
func (s *Service) CheckTunnels(ctx context.Context) error {
	lister, ok := s.broker.(interface{ Tunnels() []Domain })
	if !ok {
		return nil
	}
	for _, t := range lister.Tunnels() {
		if err := s.checkTunnel(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// ConnectedCount is how many of the account's active domains have a
// connected tunnel (metrics' active_services.tunnels).
func (s *Service) ConnectedCount(ctx context.Context, account string) (int64, error) {
	all, err := s.List(ctx, account)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, d := range all {
		if s.Connected(ctx, d.ID) {
			n++
		}
	}
	return n, nil
}
