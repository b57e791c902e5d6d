package tunnel

import (
	"context"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron/events"
	"github.com/perceptron-cloud/perceptron/fault"
)

// Closing tunnels whose domain or key has ended.
//
// A domain released, lapsed or reassigned on any process is published
// as an events.DomainChanged event; every process's Service.HandleEvent
// re-reads the domain and closes the tunnels it holds whose domain is no
// longer the active holder of the name, or whose port version is older
// (CheckTunnels does the same for all of them, on every tick and on
// events.Resync). The ingress also checks, for every request, that the
// tunnel's domain is still the active holder of the name with the same
// port version, as read after the request arrived (checkRoute): a
// request routed in the milliseconds before the event arrives, when the
// name may already be another wallet's, never reaches the previous
// owner's service. Concurrent requests for one name share a read, so the
// cost is at most one indexed read in flight per name.
//
// A tunnel remembers the key that fetched its token (Claims.Credential,
// set with WithCredential before Hub.Accept); DisconnectWhere closes the
// tunnels of keys the platform learns are revoked.

// credentialKey is the context key of WithCredential.
type credentialKey struct{}

// WithCredential returns ctx carrying the credential of the key that
// fetched a tunnel's token; Hub.Accept reads it from the request's
// context and keeps it with the tunnel.
func WithCredential(ctx context.Context, credential string) context.Context {
	return context.WithValue(ctx, credentialKey{}, credential)
}

func credentialOf(ctx context.Context) string {
	c, _ := ctx.Value(credentialKey{}).(string)
	return c
}

// CloseWhere closes the tunnels for which match, given the domain as it
// was when the tunnel connected and the credential of the key that
// fetched its token, is true, and returns how many it closed. It returns
// once their multiplexers are shut (no stream opens on them any more, and
// Connected answers false), without waiting for the WebSocket's closing
// handshake, which a peer that does not answer holds for seconds: event
// handlers call it.
func (h *Hub) CloseWhere(ctx context.Context, match func(d Domain, credential string) bool) int {
	h.mu.Lock()
	var hit []*session
	for _, s := range h.byID {
		if match(s.d, s.cred) {
			hit = append(hit, s)
		}
	}
	h.mu.Unlock()
	for _, s := range hit {
		go s.close()
	}
	for _, s := range hit {
		select {
		case <-s.mux.CloseChan():
		case <-s.done:
		case <-ctx.Done():
		}
	}
	return len(hit)
}

// Holder returns the domain (as it was when its tunnel connected) whose
// tunnel serves the subdomain here, if one does.
func (h *Hub) Holder(subdomain string) (Domain, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.bySub[subdomain]; s != nil {
		return s.d, true
	}
	return Domain{}, false
}

// closer is what a broker that can close tunnels selectively offers
// (Hub does).
type closer interface {
	CloseWhere(ctx context.Context, match func(d Domain, credential string) bool) int
}

// holder is what a broker that tells which domain serves a name offers
// (Hub does).
type holder interface {
	Holder(subdomain string) (Domain, bool)
}

// DisconnectWhere closes this process's tunnels for which match, given
// the domain and the credential of the key that fetched the tunnel's
// token, is true; it returns how many. A broker that cannot tell
// (without CloseWhere) closes none.
func (s *Service) DisconnectWhere(ctx context.Context, match func(d Domain, credential string) bool) int {
	c, ok := s.broker.(closer)
	if !ok {
		return 0
	}
	n := c.CloseWhere(ctx, match)
	if n > 0 {
		s.log.InfoContext(ctx, "closed tunnels of a revoked key", "count", n)
	}
	return n
}

// HandleEvent acts on an event of the platform's bus: on
// events.DomainChanged it closes this process's tunnels of the domain,
// or of its name, that are no longer current; on events.Resync it
// checks every tunnel (CheckTunnels). Other events are ignored.
func (s *Service) HandleEvent(ctx context.Context, e events.Event) {
	switch e.Type {
	case events.DomainChanged:
		lister, ok := s.broker.(interface{ Tunnels() []Domain })
		if !ok {
			s.disconnect(ctx, e.Subject)
			return
		}
		for _, t := range lister.Tunnels() {
			if t.ID != e.Subject && (e.Name == "" || t.Subdomain != e.Name) {
				continue
			}
			if err := s.checkTunnel(ctx, t); err != nil {
				s.log.WarnContext(ctx, "checking a tunnel failed", "domain", t.ID, "err", err)
			}
		}
	case events.Resync:
		if err := s.CheckTunnels(ctx); err != nil {
			s.log.WarnContext(ctx, "checking tunnels failed", "err", err)
		}
	}
}

// current reports whether t, a connected tunnel's domain, is still the
// stored active domain with the same wallet, port and port version.
func current(t, d Domain) bool {
	return d.Active && d.ID == t.ID && d.Account == t.Account && d.Subdomain == t.Subdomain &&
		d.LocalPort == t.LocalPort && d.PortVersion == t.PortVersion
}

// checkTunnel closes t's tunnel if its domain is no longer current.
func (s *Service) checkTunnel(ctx context.Context, t Domain) error {
	d, err := s.store.GetDomain(ctx, t.ID)
	if err != nil && fault.CodeOf(err) != fault.NotFound {
		return err
	}
	if err == nil && current(t, d) {
		return nil
	}
	s.log.InfoContext(ctx, "closing a stale tunnel", "domain", t.ID, "subdomain", t.Subdomain)
	s.closeStale(ctx, t)
	return nil
}

// closeStale closes the tunnel connected for t exactly (a tunnel the
// domain's client reconnected since, with a newer port version, stays).
func (s *Service) closeStale(ctx context.Context, t Domain) {
	c, ok := s.broker.(closer)
	if !ok {
		s.disconnect(ctx, t.ID)
		return
	}
	c.CloseWhere(ctx, func(d Domain, _ string) bool { return d.ID == t.ID && d.PortVersion == t.PortVersion })
}

// publish tells every process that d changed.
func (s *Service) publish(ctx context.Context, d Domain) {
	if s.events == nil {
		return
	}
	e := events.Event{Type: events.DomainChanged, Account: d.Account, Subject: d.ID, Name: d.Subdomain}
	if err := s.events.Publish(context.WithoutCancel(ctx), e); err != nil {
		s.log.WarnContext(ctx, "publishing a domain change failed", "domain", d.ID, "err", err)
	}
}

// checkRoute checks, for a public request to subdomain (Host host),
// that the tunnel this process holds for it, if any, is still the name's
// active holder, with the same port version, as read after the request
// arrived; a stale tunnel is closed and the request answered as without
// one (fault.NotFound "no such domain" if nobody holds the name,
// fault.Unavailable "no tunnel is connected" if someone else does). No
// tunnel here: nothing to check (the dial answers "no tunnel").
func (s *Service) checkRoute(ctx context.Context, subdomain, host string) error {
	h, ok := s.broker.(holder)
	if !ok {
		return nil
	}
	t, ok := h.Holder(subdomain)
	if !ok {
		return nil
	}
	d, err := s.routes.read(ctx, subdomain, func(ctx context.Context) (Domain, error) {
		return s.store.ActiveDomain(ctx, subdomain)
	})
	if err != nil && fault.CodeOf(err) != fault.NotFound {
		if ctx.Err() != nil {
			return fault.Wrap(err, fault.Canceled, "request canceled")
		}
		// Fail closed: a tunnel that may be stale is not used.
		return fault.Wrap(err, fault.Unavailable, "could not check "+s.FullDomain(subdomain)+": retry later")
	}
	if err == nil && current(t, d) {
		return nil
	}
	s.log.InfoContext(ctx, "closing a stale tunnel", "domain", t.ID, "subdomain", subdomain)
	s.closeStale(context.WithoutCancel(ctx), t)
	if err != nil {
		return fault.New(fault.NotFound, "no such domain: "+host)
	}
	return fault.New(fault.Unavailable, "no tunnel is connected for "+s.FullDomain(subdomain))
}

// routeChecks shares the ingress's reads of a subdomain's active domain
// between concurrent requests without ever answering a request with a
// read that began before it arrived: a request joins the read about to
// start, or starts one. Under load a subdomain costs at most one read in
// flight at a time, whatever the request rate. The zero value is ready.
type routeChecks struct {
	mu sync.Mutex
	m  map[string]*routeState
}

type routeState struct {
	running, pending *routeRead
}

type routeRead struct {
	done    chan struct{}
	waiters int // requests answered by this read
	d       Domain
	err     error
}

// routeReadTimeout bounds one shared read.
const routeReadTimeout = 10 * time.Second

func (rc *routeChecks) read(ctx context.Context, sub string, fetch func(context.Context) (Domain, error)) (Domain, error) {
	rc.mu.Lock()
	if rc.m == nil {
		rc.m = map[string]*routeState{}
	}
	st := rc.m[sub]
	if st == nil {
		st = &routeState{}
		rc.m[sub] = st
	}
	var f *routeRead
	switch {
	case st.pending != nil:
		f = st.pending
	case st.running != nil:
		st.pending = &routeRead{done: make(chan struct{})}
		f = st.pending
	default:
		// Nothing in flight: read here (only this request waits for a
		// read it starts; later ones wait for the pending read).
		st.running = &routeRead{done: make(chan struct{}), waiters: 1}
		f = st.running
		rc.mu.Unlock()
		rc.finish(ctx, sub, st, f, fetch)
		return f.d, f.err
	}
	f.waiters++
	rc.mu.Unlock()
	select {
	case <-f.done:
		return f.d, f.err
	case <-ctx.Done():
		return Domain{}, ctx.Err()
	}
}

// finish performs f's read and hands over to the pending read, if any,
// which a goroutine performs for the requests waiting on it.
func (rc *routeChecks) finish(ctx context.Context, sub string, st *routeState, f *routeRead, fetch func(context.Context) (Domain, error)) {
	ctx, cancel := context.WithTimeout(ctx, routeReadTimeout)
	f.d, f.err = fetch(ctx)
	cancel()
	close(f.done)
	rc.mu.Lock()
	st.running, st.pending = st.pending, nil
	next := st.running
	if next == nil {
		delete(rc.m, sub)
	}
	rc.mu.Unlock()
	if next != nil {
		// Shared by several requests: bounded by its own timeout, not
		// by any one request's context.
		go rc.finish(context.Background(), sub, st, next, fetch)
	}
}

// Keyed is a connected tunnel and the credential of the key that fetched
// its token.
type Keyed struct {
	Domain     Domain
	Credential string
}

// Keyed returns the tunnels connected here with a token that names its
// key.
func (h *Hub) Keyed() []Keyed {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Keyed
	for _, s := range h.byID {
		if s.cred != "" {
			out = append(out, Keyed{Domain: s.d, Credential: s.cred})
		}
	}
	return out
}

// CheckTunnelKeys closes this process's tunnels whose key is no longer
// valid, as active (auth.Service.CredentialActive) tells: the backstop of
// a revocation event this process missed. The platform runs it on every
// tick and on events.Resync. A broker that does not list keys is skipped.
func (s *Service) CheckTunnelKeys(ctx context.Context, active func(ctx context.Context, account, credential string) (bool, error)) error {
	lister, ok := s.broker.(interface{ Keyed() []Keyed })
	if !ok {
		return nil
	}
	for _, k := range lister.Keyed() {
		ok, err := active(ctx, k.Domain.Account, k.Credential)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		s.log.InfoContext(ctx, "closing the tunnel of a revoked key", "domain", k.Domain.ID, "subdomain", k.Domain.Subdomain)
		s.DisconnectWhere(ctx, func(d Domain, credential string) bool {
			return d.ID == k.Domain.ID && d.PortVersion == k.Domain.PortVersion && credential == k.Credential
		})
	}
	return nil
}
