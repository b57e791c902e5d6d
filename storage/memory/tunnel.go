package memory

import (
	"context"
	"sort"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

var _ tunnel.Store = (*Store)(nil)

// domainNotFound is the store's NotFound for domains.
func domainNotFound() error { return fault.New(fault.NotFound, "domain not found") }

// domainLocked fills d's subscription fields; s.mu held.
func (s *Store) domainLocked(d tunnel.Domain) tunnel.Domain {
	if sub := s.billing.subs[d.ID]; sub != nil {
		d.HourlyCost, d.PrepaidUntil, d.Active = sub.HourlyCost, sub.PrepaidUntil, sub.Status == billing.SubActive
	}
	return d
}

// activeDomainLocked returns the account's active domain; s.mu held.
func (s *Store) activeDomainLocked(account, id string) (*tunnel.Domain, error) {
	d := s.domains[id]
	if d == nil || d.Account != account || !s.domainLocked(*d).Active {
		return nil, domainNotFound()
	}
	return d, nil
}

// ReserveDomain stores d with its subscription and first charge, under
// one lock.
func (s *Store) ReserveDomain(_ context.Context, d tunnel.Domain, sub billing.Subscription, first billing.Posting) (tunnel.Domain, error) {
	if d.ID != sub.ID || d.Account != sub.Account || d.Subdomain != sub.Resource || !sub.Exclusive {
		return tunnel.Domain{}, fault.New(fault.Invalid, "the domain and its subscription disagree")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev := s.domains[d.ID]; prev != nil {
		// A retry of the same reservation returns it.
		if _, _, err := s.createSubLocked(sub, first); err != nil {
			return tunnel.Domain{}, err
		}
		return s.domainLocked(*prev), nil
	}
	if _, _, err := s.createSubLocked(sub, first); err != nil {
		return tunnel.Domain{}, err
	}
	d.LocalPort, d.PortVersion = 0, 0
	d.CreatedAt = billrules.Time(d.CreatedAt)
	stored := d
	s.domains[d.ID] = &stored
	return s.domainLocked(d), nil
}

// GetDomain returns a domain in any state.
func (s *Store) GetDomain(_ context.Context, id string) (tunnel.Domain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[id]
	if d == nil {
		return tunnel.Domain{}, domainNotFound()
	}
	return s.domainLocked(*d), nil
}

// ActiveDomain returns the active domain of a subdomain.
func (s *Store) ActiveDomain(_ context.Context, subdomain string) (tunnel.Domain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ak, id := range s.billing.active {
		if ak.kind == tunnel.Kind && ak.resource == subdomain {
			if d := s.domains[id]; d != nil {
				return s.domainLocked(*d), nil
			}
		}
	}
	return tunnel.Domain{}, domainNotFound()
}

// ListDomains returns a page of the account's active domains.
func (s *Store) ListDomains(_ context.Context, account string, r page.Request) (page.Page[tunnel.Domain], error) {
	account, err := billrules.Account(account)
	if err != nil {
		return page.Page[tunnel.Domain]{}, err
	}
	size := r.Size(tunnel.PageSize, tunnel.PageMax)
	s.mu.Lock()
	var all []tunnel.Domain
	for _, d := range s.domains {
		if full := s.domainLocked(*d); d.Account == account && full.Active {
			if k := tunnel.Key(full); r.After.Older(k.Order, k.ID) {
				all = append(all, full)
			}
		}
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		a, b := tunnel.Key(all[i]), tunnel.Key(all[j])
		return a.Order > b.Order || a.Order == b.Order && a.ID > b.ID
	})
	if len(all) > size+1 {
		all = all[:size+1]
	}
	return page.Of(all, size, tunnel.Key), nil
}

// AssignPort sets the active domain's port.
func (s *Store) AssignPort(_ context.Context, account, id string, port uint16) (tunnel.Domain, error) {
	if port == 0 {
		return tunnel.Domain{}, fault.New(fault.Invalid, "port must be positive")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.activeDomainLocked(account, id)
	if err != nil {
		return tunnel.Domain{}, err
	}
	for _, o := range s.domains {
		if o != d && o.Account == account && o.LocalPort == port && s.domainLocked(*o).Active {
			return tunnel.Domain{}, fault.New(fault.Conflict, "port already assigned")
		}
	}
	d.LocalPort = port
	d.PortVersion++
	return s.domainLocked(*d), nil
}

// UnassignPort clears the active domain's port.
func (s *Store) UnassignPort(_ context.Context, account, id string) (tunnel.Domain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.activeDomainLocked(account, id)
	if err != nil {
		return tunnel.Domain{}, err
	}
	d.LocalPort = 0
	d.PortVersion++
	return s.domainLocked(*d), nil
}

// ReleaseDomain cancels the active domain's subscription and clears its
// port.
func (s *Store) ReleaseDomain(_ context.Context, account, id string, now time.Time) (tunnel.Domain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.activeDomainLocked(account, id)
	if err != nil {
		return tunnel.Domain{}, err
	}
	if err := s.cancelSubLocked(account, id, now); err != nil {
		return tunnel.Domain{}, err
	}
	d.LocalPort = 0
	d.PortVersion++
	return s.domainLocked(*d), nil
}
