package sqlstore

import (
	"context"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// Domains is tunnel.Store over a Backend: the domains table, joined with
// the subscriptions paying for its rows, whose creation and cancellation
// share the domain's transaction.
type Domains struct {
	B    Backend
	Subs Subscriptions
}

var _ tunnel.Store = Domains{}

const domainCols = `d.id, d.account, d.subdomain, d.local_port, d.port_version, d.created_at, s.hourly_cost, s.prepaid_until, s.status`

const domainFrom = ` FROM domains d JOIN subscriptions s ON s.id = d.id`

func scanDomain(r Row) (tunnel.Domain, error) {
	var (
		d                tunnel.Domain
		port             *int64
		created, prepaid int64
		cost             int64
		status           string
	)
	if err := r.Scan(&d.ID, &d.Account, &d.Subdomain, &port, &d.PortVersion, &created, &cost, &prepaid, &status); err != nil {
		return tunnel.Domain{}, err
	}
	if port != nil {
		d.LocalPort = uint16(*port)
	}
	d.CreatedAt, d.PrepaidUntil, d.HourlyCost = fromMicro(created), fromMicro(prepaid), billing.MicroCents(cost)
	d.Active = status == string(billing.SubActive)
	return d, nil
}

func domainNotFound() error { return fault.New(fault.NotFound, "domain not found") }

func (s Domains) err(op string, err error) error {
	if err == nil || fault.CodeOf(err) != fault.Unknown {
		return err
	}
	return s.B.Dialect().wrap(op, err)
}

func (s Domains) get(ctx context.Context, q Querier, id string) (tunnel.Domain, error) {
	d, err := scanDomain(q.QueryRow(ctx, `SELECT `+domainCols+domainFrom+` WHERE d.id = $1`, id))
	if s.B.Dialect().NoRows(err) {
		return tunnel.Domain{}, domainNotFound()
	}
	return d, err
}

// ReserveDomain writes the subscription, its first charge and the domain
// in one write transaction, retried after a unique violation (a race for
// the subdomain, decided by subscriptions_exclusive: the retry sees the
// winner and answers fault.Conflict).
func (s Domains) ReserveDomain(ctx context.Context, d tunnel.Domain, sub billing.Subscription, first billing.Posting) (tunnel.Domain, error) {
	if d.ID != sub.ID || d.Account != sub.Account || d.Subdomain != sub.Resource || !sub.Exclusive {
		return tunnel.Domain{}, fault.New(fault.Invalid, "the domain and its subscription disagree")
	}
	var out tunnel.Domain
	err := s.Subs.writeRetryingUnique(ctx, func(q Querier) error {
		if _, _, err := s.Subs.CreateTx(ctx, q, sub, first); err != nil {
			return err
		}
		if prev, err := s.get(ctx, q, d.ID); err == nil {
			out = prev // a retry of the same reservation
			return nil
		} else if fault.CodeOf(err) != fault.NotFound {
			return err
		}
		if _, err := q.Exec(ctx, `INSERT INTO domains (id, account, subdomain, local_port, port_version, created_at) VALUES ($1, $2, $3, NULL, 0, $4)`,
			d.ID, d.Account, d.Subdomain, billrules.Time(d.CreatedAt).UnixMicro()); err != nil {
			return err
		}
		var err error
		out, err = s.get(ctx, q, d.ID)
		return err
	})
	if s.B.Dialect().Unique(err) {
		err = billrules.SubExists()
	}
	return out, s.err("reserve domain", err)
}

// GetDomain returns a domain in any state.
func (s Domains) GetDomain(ctx context.Context, id string) (tunnel.Domain, error) {
	d, err := s.get(ctx, s.B.Read(), id)
	return d, s.err("get domain", err)
}

// ActiveDomain returns the active domain of a subdomain (through the
// partial index subscriptions_exclusive).
func (s Domains) ActiveDomain(ctx context.Context, subdomain string) (tunnel.Domain, error) {
	t := s.B.Dialect().Types
	d, err := scanDomain(s.B.Read().QueryRow(ctx, `SELECT `+domainCols+domainFrom+
		` WHERE s.kind = $1 AND s.resource = $2 AND s.status = 'Active' AND s.exclusive = `+t.True, tunnel.Kind, subdomain))
	if s.B.Dialect().NoRows(err) {
		return tunnel.Domain{}, domainNotFound()
	}
	return d, s.err("active domain", err)
}

// ListDomains returns a page of the account's active domains, newest
// first by creation, ties by the bytes of the ID.
func (s Domains) ListDomains(ctx context.Context, account string, r page.Request) (page.Page[tunnel.Domain], error) {
	none := page.Page[tunnel.Domain]{}
	account, err := billrules.Account(account)
	if err != nil {
		return none, err
	}
	size := r.Size(tunnel.PageSize, tunnel.PageMax)
	q, args := timePage(s.B.Dialect(), `SELECT `+domainCols+domainFrom+` WHERE d.account = $1 AND s.status = 'Active'`,
		[]any{account}, "d.created_at", "d.id", r.After, size)
	return readPage(ctx, s.B.Read(), s.B.Dialect(), "list domains", q, args, size, scanDomain, tunnel.Key)
}

// activeTx returns the account's active domain inside q, its row locked
// where the dialect can.
func (s Domains) activeTx(ctx context.Context, q Querier, account, id string) (tunnel.Domain, error) {
	dom, err := scanDomain(q.QueryRow(ctx, `SELECT `+domainCols+domainFrom+
		` WHERE d.id = $1 AND d.account = $2 AND s.status = 'Active'`+s.B.Dialect().ForUpdate, id, account))
	if s.B.Dialect().NoRows(err) {
		return tunnel.Domain{}, domainNotFound()
	}
	return dom, err
}

// setPort writes the domain's port (nil clears it) and bumps its version.
func (s Domains) setPort(ctx context.Context, q Querier, id string, port any) (tunnel.Domain, error) {
	if _, err := q.Exec(ctx, `UPDATE domains SET local_port = $1, port_version = port_version + 1 WHERE id = $2`, port, id); err != nil {
		return tunnel.Domain{}, err
	}
	return s.get(ctx, q, id)
}

// AssignPort sets the active domain's port. The port held by one of the
// account's domains that is no longer active is cleared first; the index
// domains_account_port refuses a port another active domain holds.
func (s Domains) AssignPort(ctx context.Context, account, id string, port uint16) (tunnel.Domain, error) {
	if port == 0 {
		return tunnel.Domain{}, fault.New(fault.Invalid, "port must be positive")
	}
	return s.writeActive(ctx, "assign port", account, id, func(q Querier, account string) (tunnel.Domain, error) {
		if _, err := q.Exec(ctx, `UPDATE domains SET local_port = NULL WHERE account = $1 AND local_port = $2 AND id <> $3
			AND id IN (SELECT id FROM subscriptions WHERE account = $1 AND status <> 'Active')`, account, int64(port), id); err != nil {
			return tunnel.Domain{}, err
		}
		return s.setPort(ctx, q, id, int64(port))
	})
}

// writeActive runs fn in a write transaction on the account's active
// domain, whose row it locks first where the dialect can; fn gets the
// account as stored.
func (s Domains) writeActive(ctx context.Context, op, account, id string, fn func(q Querier, account string) (tunnel.Domain, error)) (tunnel.Domain, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return tunnel.Domain{}, err
	}
	var out tunnel.Domain
	err = s.B.Write(ctx, func(q Querier) error {
		if _, err := s.activeTx(ctx, q, account, id); err != nil {
			return err
		}
		var err error
		out, err = fn(q, account)
		return err
	})
	if s.B.Dialect().Unique(err) && op == "assign port" {
		err = fault.New(fault.Conflict, "port already assigned")
	}
	return out, s.err(op, err)
}

// UnassignPort clears the active domain's port.
func (s Domains) UnassignPort(ctx context.Context, account, id string) (tunnel.Domain, error) {
	return s.writeActive(ctx, "unassign port", account, id, func(q Querier, _ string) (tunnel.Domain, error) {
		return s.setPort(ctx, q, id, nil)
	})
}

// ReleaseDomain cancels the subscription and clears the port in one
// transaction.
func (s Domains) ReleaseDomain(ctx context.Context, account, id string, now time.Time) (tunnel.Domain, error) {
	return s.writeActive(ctx, "release domain", account, id, func(q Querier, _ string) (tunnel.Domain, error) {
		n, err := q.Exec(ctx, `UPDATE subscriptions SET status = 'Cancelled', ended_at = $1 WHERE id = $2 AND status = 'Active'`,
			billrules.Time(now).UnixMicro(), id)
		if err != nil {
			return tunnel.Domain{}, err
		}
		if n != 1 {
			return tunnel.Domain{}, domainNotFound()
		}
		return s.setPort(ctx, q, id, nil)
	})
}
