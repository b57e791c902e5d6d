package httpserver

import (
	"net/http"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// domainJSON is a domain as GET /api/domains shows it.
type domainJSON struct {
	ID           string  `json:"id"`
	Subdomain    string  `json:"subdomain"`
	FullDomain   string  `json:"full_domain"`
	ServiceID    string  `json:"service_id"`
	CreatedAt    int64   `json:"created_at"`
	LocalPort    *uint16 `json:"local_port"`
	TunnelActive bool    `json:"tunnel_active"`
	// Beyond the reference: the reservation's price and prepaid end.
	HourlyCostCents int64 `json:"hourly_cost_cents"`
	PrepaidUntil    int64 `json:"prepaid_until"`
}

func (s *server) domainJSON(r *http.Request, d tunnel.Domain) domainJSON {
	out := domainJSON{
		ID: d.ID, Subdomain: d.Subdomain, FullDomain: s.p.Domains.FullDomain(d.Subdomain), ServiceID: d.ServiceID(),
		CreatedAt: d.CreatedAt.Unix(), TunnelActive: s.p.Domains.Connected(r.Context(), d.ID),
		HourlyCostCents: d.HourlyCost.CeilCents(), PrepaidUntil: d.PrepaidUntil.Unix(),
	}
	if d.LocalPort != 0 {
		p := d.LocalPort
		out.LocalPort = &p
	}
	return out
}

func (s *server) reserveDomain(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Subdomain *string `json:"subdomain"`
	}
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Subdomain == nil {
		s.writeError(w, r, fault.New(fault.Invalid, tunnel.MsgSubdomainMissing))
		return
	}
	d, err := s.p.Domains.Reserve(r.Context(), principal(r.Context()).Address, *req.Subdomain)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": d.ID, "subdomain": d.Subdomain, "full_domain": s.p.Domains.FullDomain(d.Subdomain),
		"hourly_cost_cents": d.HourlyCost.CeilCents(), "prepaid_until": d.PrepaidUntil.Unix(),
	})
}

func (s *server) listDomains(w http.ResponseWriter, r *http.Request) {
	all, err := s.p.Domains.List(r.Context(), principal(r.Context()).Address)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]domainJSON, 0, len(all))
	for _, d := range all {
		out = append(out, s.domainJSON(r, d))
	}
	lo, hi := s.p.Domains.PortRange()
	writeJSON(w, http.StatusOK, map[string]any{
		"domains": out, "base_domain": s.p.Domains.BaseDomain(),
		"hourly_cost_cents": s.p.Domains.HourlyCost().CeilCents(), "port_range": []uint16{lo, hi},
	})
}

func (s *server) getDomain(w http.ResponseWriter, r *http.Request) {
	d, err := s.p.Domains.Get(r.Context(), principal(r.Context()).Address, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.domainJSON(r, d))
}

func (s *server) assignDomain(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Port *int `json:"port"`
	}
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	lo, hi := s.p.Domains.PortRange()
	if req.Port == nil {
		s.writeError(w, r, fault.Newf(fault.Invalid, "port must be between %d and %d", lo, hi))
		return
	}
	d, err := s.p.Domains.Assign(r.Context(), principal(r.Context()).Address, r.PathValue("id"), *req.Port)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "assigned", "port": d.LocalPort})
}

func (s *server) unassignDomain(w http.ResponseWriter, r *http.Request) {
	if _, err := s.p.Domains.Unassign(r.Context(), principal(r.Context()).Address, r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "unassigned"})
}

func (s *server) tunnelToken(w http.ResponseWriter, r *http.Request) {
	pr := principal(r.Context())
	t, err := s.p.Domains.TokenFor(r.Context(), pr.Address, r.PathValue("id"), pr.Credential)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"tunnel_token": t.Token, "subdomain": t.Domain.Subdomain, "expires_at": t.ExpiresAt.Unix(), "local_port": t.Domain.LocalPort,
	})
}

func (s *server) releaseDomain(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DomainID string `json:"domain_id"`
	}
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.DomainID == "" {
		s.writeError(w, r, fault.New(fault.Invalid, "domain_id is required"))
		return
	}
	if err := s.p.Domains.Release(r.Context(), principal(r.Context()).Address, req.DomainID); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "released"})
}

// tunnelAcceptor is the optional capability of a broker that holds
// tunnels itself (tunnel.Hub): it upgrades the request.
type tunnelAcceptor interface {
	Accept(w http.ResponseWriter, r *http.Request, d tunnel.Domain) error
}

// connectTunnel is the tunnel client's WebSocket: the tunnel token as a
// bearer token, checked against the stored domain before the upgrade,
// and the key that fetched it checked to be still valid (a token
// outlives a revocation by up to its TTL). The tunnel keeps the key's
// credential, so that its revocation closes the tunnel.
func (s *server) connectTunnel(w http.ResponseWriter, r *http.Request) {
	token, ok := bearer(r)
	if !ok {
		s.writeError(w, r, fault.New(fault.Unauthenticated, tunnel.MsgInvalidToken))
		return
	}
	d, c, err := s.p.Domains.AuthorizeToken(r.Context(), token)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if c.Credential != "" {
		active, err := s.p.Auth.CredentialActive(r.Context(), d.Account, c.Credential)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !active {
			s.writeError(w, r, fault.New(fault.Unauthenticated, tunnel.MsgInvalidToken))
			return
		}
		r = r.WithContext(tunnel.WithCredential(r.Context(), c.Credential))
	}
	acc, ok := s.p.Domains.Broker().(tunnelAcceptor)
	if !ok {
		s.writeError(w, r, fault.New(fault.Unavailable, "this server does not accept tunnels"))
		return
	}
	if err := acc.Accept(w, r, d); err != nil {
		s.log.InfoContext(r.Context(), "tunnel connection refused", "domain", d.ID, "err", err)
	}
}
