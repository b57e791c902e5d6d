package memory

import (
	"context"
	"sort"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/personas"
)

var _ personas.Store = (*Store)(nil)

type personaState struct {
	personas map[string]personas.Persona
	sessions map[string]*memSession
	messages map[string][]*personas.Message // by session, in seq order
	files    map[string]map[string]personas.File
	seq      int64
}

type memSession struct {
	s     personas.Session
	lease time.Time
}

func newPersonaState() personaState {
	return personaState{personas: map[string]personas.Persona{}, sessions: map[string]*memSession{},
		messages: map[string][]*personas.Message{}, files: map[string]map[string]personas.File{}}
}

func nf(what string) error { return fault.New(fault.NotFound, what+" not found") }

// CreatePersona stores a persona.
func (s *Store) CreatePersona(_ context.Context, p personas.Persona, maxPerAccount int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if maxPerAccount > 0 {
		n := 0
		for _, q := range s.personas.personas {
			if q.Account == p.Account {
				n++
			}
		}
		if n >= maxPerAccount {
			return fault.Newf(fault.Invalid, "at most %d personas", maxPerAccount)
		}
	}
	s.personas.personas[p.ID] = p
	return nil
}

// GetPersona returns a persona.
func (s *Store) GetPersona(_ context.Context, id string) (personas.Persona, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.personas.personas[id]
	if !ok {
		return personas.Persona{}, nf("persona")
	}
	return p, nil
}

// ListPersonas returns the account's personas, oldest first.
func (s *Store) ListPersonas(_ context.Context, account string) ([]personas.Persona, error) {
	s.mu.Lock()
	out := []personas.Persona{}
	for _, p := range s.personas.personas {
		if p.Account == account {
			out = append(out, p)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		return out[i].CreatedAt.Before(out[j].CreatedAt) || out[i].CreatedAt.Equal(out[j].CreatedAt) && out[i].ID < out[j].ID
	})
	return out, nil
}

// DeletePersona deletes the persona with everything it has.
func (s *Store) DeletePersona(_ context.Context, account, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.personas.personas[id]
	if !ok || p.Account != account {
		return nf("persona")
	}
	delete(s.personas.personas, id)
	for sid, ss := range s.personas.sessions {
		if ss.s.PersonaID == id {
			delete(s.personas.sessions, sid)
			delete(s.personas.messages, sid)
		}
	}
	delete(s.personas.files, id)
	return nil
}

// CreateSession stores a session.
func (s *Store) CreateSession(_ context.Context, ss personas.Session, maxPerPersona int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if maxPerPersona > 0 {
		n := 0
		for _, x := range s.personas.sessions {
			if x.s.PersonaID == ss.PersonaID {
				n++
			}
		}
		if n >= maxPerPersona {
			return fault.Newf(fault.Invalid, "at most %d sessions", maxPerPersona)
		}
	}
	s.personas.sessions[ss.ID] = &memSession{s: ss}
	return nil
}

// GetSession returns a session of the persona.
func (s *Store) GetSession(_ context.Context, personaID, id string) (personas.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.personas.sessions[id]
	if ss == nil || ss.s.PersonaID != personaID {
		return personas.Session{}, nf("session")
	}
	return ss.s, nil
}

// SessionByID returns a session.
func (s *Store) SessionByID(_ context.Context, id string) (personas.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.personas.sessions[id]
	if ss == nil {
		return personas.Session{}, nf("session")
	}
	return ss.s, nil
}

// ListSessions returns the persona's sessions, oldest first.
func (s *Store) ListSessions(_ context.Context, personaID string) ([]personas.Session, error) {
	s.mu.Lock()
	out := []personas.Session{}
	for _, ss := range s.personas.sessions {
		if ss.s.PersonaID == personaID {
			out = append(out, ss.s)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		return out[i].CreatedAt.Before(out[j].CreatedAt) || out[i].CreatedAt.Equal(out[j].CreatedAt) && out[i].ID < out[j].ID
	})
	return out, nil
}

// DeleteSession deletes the session and its messages.
func (s *Store) DeleteSession(_ context.Context, personaID, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.personas.sessions[id]
	if ss == nil || ss.s.PersonaID != personaID {
		return nf("session")
	}
	delete(s.personas.sessions, id)
	delete(s.personas.messages, id)
	return nil
}

// Send appends the user's message and the pending reply.
func (s *Store) Send(_ context.Context, user, reply personas.Message, maxPending int) (personas.Message, personas.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.personas.sessions[user.SessionID] == nil {
		return personas.Message{}, personas.Message{}, nf("session")
	}
	if maxPending > 0 {
		n := 0
		for _, m := range s.personas.messages[user.SessionID] {
			if m.Status == personas.StatusPending {
				n++
			}
		}
		if n >= maxPending {
			return personas.Message{}, personas.Message{}, fault.Newf(fault.RateLimited, "at most %d pending replies", maxPending)
		}
	}
	out := [2]personas.Message{user, reply}
	for i := range out {
		s.personas.seq++
		out[i].Seq = s.personas.seq
		out[i].CreatedAt = out[i].CreatedAt.Truncate(time.Microsecond).UTC()
		m := out[i]
		s.personas.messages[user.SessionID] = append(s.personas.messages[user.SessionID], &m)
	}
	return out[0], out[1], nil
}

// ListMessages returns a page of the session's messages, newest first.
func (s *Store) ListMessages(_ context.Context, sessionID string, r page.Request) (page.Page[personas.Message], error) {
	size := r.Size(50, 1000)
	s.mu.Lock()
	msgs := s.personas.messages[sessionID]
	var out []personas.Message
	for i := len(msgs) - 1; i >= 0 && len(out) <= size; i-- {
		if r.After.IsZero() || msgs[i].Seq < r.After.Order {
			out = append(out, *msgs[i])
		}
	}
	s.mu.Unlock()
	return page.Of(out, size, personas.Key), nil
}

func (s *Store) findMessageLocked(id string) *personas.Message {
	for _, msgs := range s.personas.messages {
		for _, m := range msgs {
			if m.ID == id {
				return m
			}
		}
	}
	return nil
}

// FinishReply completes a pending message.
func (s *Store) FinishReply(_ context.Context, id, content, status string, at time.Time) (personas.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.findMessageLocked(id)
	if m == nil || m.Status != personas.StatusPending {
		return personas.Message{}, nf("message")
	}
	m.Content, m.Status, m.CreatedAt = content, status, at.Truncate(time.Microsecond).UTC()
	return *m, nil
}

// SetReplyCharge records the hold of the attempt writing a pending reply.
func (s *Store) SetReplyCharge(_ context.Context, id, charge string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.findMessageLocked(id)
	if m == nil || m.Status != personas.StatusPending {
		return nf("message")
	}
	m.Charge = charge
	return nil
}

// LeaseSessions leases sessions with a pending reply.
func (s *Store) LeaseSessions(_ context.Context, now time.Time, lease time.Duration, limit int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, ss := range s.personas.sessions {
		if len(out) >= limit || ss.lease.After(now) {
			continue
		}
		for _, m := range s.personas.messages[id] {
			if m.Status == personas.StatusPending {
				ss.lease = now.Add(lease)
				out = append(out, id)
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// NextReply returns the session's oldest pending reply.
func (s *Store) NextReply(_ context.Context, sessionID string) (personas.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.personas.messages[sessionID] {
		if m.Status == personas.StatusPending {
			return *m, nil
		}
	}
	return personas.Message{}, nf("reply")
}

// RenewLease extends the session's lease.
func (s *Store) RenewLease(_ context.Context, sessionID string, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.personas.sessions[sessionID]; ss != nil {
		ss.lease = until
	}
	return nil
}

// ReleaseSession ends the session's lease.
func (s *Store) ReleaseSession(_ context.Context, sessionID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.personas.sessions[sessionID]; ss != nil {
		ss.lease = time.Time{}
	}
	return nil
}

// PutFile writes a file.
func (s *Store) PutFile(_ context.Context, personaID string, f personas.File, maxFiles int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	files := s.personas.files[personaID]
	if files == nil {
		files = map[string]personas.File{}
		s.personas.files[personaID] = files
	}
	if _, ok := files[f.Name]; !ok && len(files) >= maxFiles {
		return fault.Newf(fault.Invalid, "a persona holds at most %d files", maxFiles)
	}
	f.UpdatedAt = f.UpdatedAt.Truncate(time.Microsecond).UTC()
	files[f.Name] = f
	return nil
}

// GetFile returns a file.
func (s *Store) GetFile(_ context.Context, personaID, name string) (personas.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.personas.files[personaID][name]
	if !ok {
		return personas.File{}, nf("file")
	}
	return f, nil
}

// ListFiles returns the persona's files by name.
func (s *Store) ListFiles(_ context.Context, personaID string) ([]personas.File, error) {
	s.mu.Lock()
	out := []personas.File{}
	for _, f := range s.personas.files[personaID] {
		out = append(out, f)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteFile deletes a file.
func (s *Store) DeleteFile(_ context.Context, personaID, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.personas.files[personaID][name]; !ok {
		return nf("file")
	}
	delete(s.personas.files[personaID], name)
	return nil
}
