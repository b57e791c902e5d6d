package sqlstore

import (
	"context"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/personas"
)

// Personas is personas.Store over a Backend.
type Personas struct {
	B Backend
}

var _ personas.Store = Personas{}

func (s Personas) err(op string, err error) error {
	if err == nil || fault.CodeOf(err) != fault.Unknown {
		return err
	}
	return s.B.Dialect().wrap(op, err)
}

func notFound(what string) error { return fault.New(fault.NotFound, what+" not found") }

func (s Personas) exec(ctx context.Context, op, stmt string, args ...any) (int64, error) {
	var n int64
	err := s.B.Write(ctx, func(q Querier) error {
		var err error
		n, err = q.Exec(ctx, stmt, args...)
		return err
	})
	return n, s.err(op, err)
}

// underLimit serializes the writers of scope (PostgreSQL: an advisory
// lock of the transaction; SQLite's writers are serialized already) and
// checks that the count query, run with args, is below limit (no check
// when limit <= 0).
func (s Personas) underLimit(ctx context.Context, q Querier, scope string, limit int, limited error, count string, args ...any) error {
	if limit <= 0 {
		return nil
	}
	if d := s.B.Dialect(); d.Serialize != nil {
		if err := d.Serialize(ctx, q, scope); err != nil {
			return err
		}
	}
	var n int
	if err := q.QueryRow(ctx, count, args...).Scan(&n); err != nil {
		return err
	}
	if n >= limit {
		return limited
	}
	return nil
}

// CreatePersona stores a persona, within the account's limit.
func (s Personas) CreatePersona(ctx context.Context, p personas.Persona, maxPerAccount int) error {
	err := s.B.Write(ctx, func(q Querier) error {
		if err := s.underLimit(ctx, q, "personas:"+p.Account, maxPerAccount, fault.Newf(fault.Invalid, "at most %d personas", maxPerAccount),
			`SELECT count(*) FROM personas WHERE account = $1`, p.Account); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `INSERT INTO personas (id, account, personality_id, name, created_at) VALUES ($1, $2, $3, $4, $5)`,
			p.ID, p.Account, p.PersonalityID, p.Name, p.CreatedAt.UnixMicro())
		return err
	})
	return s.err("create persona", err)
}

const personaCols = `id, account, personality_id, name, created_at`

func scanPersona(r Row) (personas.Persona, error) {
	var p personas.Persona
	var at int64
	err := r.Scan(&p.ID, &p.Account, &p.PersonalityID, &p.Name, &at)
	p.CreatedAt = fromMicro(at)
	return p, err
}

// GetPersona returns a persona.
func (s Personas) GetPersona(ctx context.Context, id string) (personas.Persona, error) {
	p, err := scanPersona(s.B.Read().QueryRow(ctx, `SELECT `+personaCols+` FROM personas WHERE id = $1`, id))
	if s.B.Dialect().NoRows(err) {
		return personas.Persona{}, notFound("persona")
	}
	return p, s.err("get persona", err)
}

func readAll[T any](ctx context.Context, q Querier, d Dialect, what, query string, scan func(Row) (T, error), args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, d.wrap(what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, d.wrap(what, err)
		}
		out = append(out, v)
	}
	return out, d.wrapIf(what, rows.Err())
}

// ListPersonas returns the account's personas, oldest first.
func (s Personas) ListPersonas(ctx context.Context, account string) ([]personas.Persona, error) {
	return readAll(ctx, s.B.Read(), s.B.Dialect(), "list personas",
		`SELECT `+personaCols+` FROM personas WHERE account = $1 ORDER BY created_at, id`+s.B.Dialect().Binary, scanPersona, account)
}

// DeletePersona deletes the persona, its sessions, messages and files.
func (s Personas) DeletePersona(ctx context.Context, account, id string) error {
	err := s.B.Write(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM personas WHERE id = $1 AND account = $2`, id, account)
		if err != nil {
			return err
		}
		if n == 0 {
			return notFound("persona")
		}
		for _, stmt := range []string{
			`DELETE FROM persona_messages WHERE session_id IN (SELECT id FROM persona_sessions WHERE persona_id = $1)`,
			`DELETE FROM persona_sessions WHERE persona_id = $1`,
			`DELETE FROM persona_files WHERE persona_id = $1`,
		} {
			if _, err := q.Exec(ctx, stmt, id); err != nil {
				return err
			}
		}
		return nil
	})
	return s.err("delete persona", err)
}

// CreateSession stores a session.
func (s Personas) CreateSession(ctx context.Context, ss personas.Session, maxPerPersona int) error {
	err := s.B.Write(ctx, func(q Querier) error {
		if err := s.underLimit(ctx, q, "persona-sessions:"+ss.PersonaID, maxPerPersona, fault.Newf(fault.Invalid, "at most %d sessions", maxPerPersona),
			`SELECT count(*) FROM persona_sessions WHERE persona_id = $1`, ss.PersonaID); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `INSERT INTO persona_sessions (id, persona_id, name, created_at) VALUES ($1, $2, $3, $4)`,
			ss.ID, ss.PersonaID, ss.Name, ss.CreatedAt.UnixMicro())
		return err
	})
	return s.err("create session", err)
}

const sessionCols = `id, persona_id, name, created_at`

func scanSession(r Row) (personas.Session, error) {
	var ss personas.Session
	var at int64
	err := r.Scan(&ss.ID, &ss.PersonaID, &ss.Name, &at)
	ss.CreatedAt = fromMicro(at)
	return ss, err
}

// GetSession returns a session of the persona.
func (s Personas) GetSession(ctx context.Context, personaID, id string) (personas.Session, error) {
	ss, err := scanSession(s.B.Read().QueryRow(ctx, `SELECT `+sessionCols+` FROM persona_sessions WHERE id = $1 AND persona_id = $2`, id, personaID))
	if s.B.Dialect().NoRows(err) {
		return personas.Session{}, notFound("session")
	}
	return ss, s.err("get session", err)
}

// SessionByID returns a session.
func (s Personas) SessionByID(ctx context.Context, id string) (personas.Session, error) {
	ss, err := scanSession(s.B.Read().QueryRow(ctx, `SELECT `+sessionCols+` FROM persona_sessions WHERE id = $1`, id))
	if s.B.Dialect().NoRows(err) {
		return personas.Session{}, notFound("session")
	}
	return ss, s.err("get session", err)
}

// ListSessions returns the persona's sessions, oldest first.
func (s Personas) ListSessions(ctx context.Context, personaID string) ([]personas.Session, error) {
	return readAll(ctx, s.B.Read(), s.B.Dialect(), "list sessions",
		`SELECT `+sessionCols+` FROM persona_sessions WHERE persona_id = $1 ORDER BY created_at, id`+s.B.Dialect().Binary, scanSession, personaID)
}

// DeleteSession deletes the session and its messages.
func (s Personas) DeleteSession(ctx context.Context, personaID, id string) error {
	err := s.B.Write(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM persona_sessions WHERE id = $1 AND persona_id = $2`, id, personaID)
		if err != nil {
			return err
		}
		if n == 0 {
			return notFound("session")
		}
		_, err = q.Exec(ctx, `DELETE FROM persona_messages WHERE session_id = $1`, id)
		return err
	})
	return s.err("delete session", err)
}

const messageCols = `seq, id, session_id, role, content, status, created_at, charge`

func scanMessage(r Row) (personas.Message, error) {
	var m personas.Message
	var at int64
	err := r.Scan(&m.Seq, &m.ID, &m.SessionID, &m.Role, &m.Content, &m.Status, &at, &m.Charge)
	m.CreatedAt = fromMicro(at)
	return m, err
}

// Send appends the user's message and the pending reply, within the
// session's limit of pending replies.
func (s Personas) Send(ctx context.Context, user, reply personas.Message, maxPending int) (personas.Message, personas.Message, error) {
	var out [2]personas.Message
	err := s.B.Write(ctx, func(q Querier) error {
		var n int
		if err := q.QueryRow(ctx, `SELECT count(*) FROM persona_sessions WHERE id = $1`, user.SessionID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return notFound("session")
		}
		if err := s.underLimit(ctx, q, "persona-send:"+user.SessionID, maxPending, fault.Newf(fault.RateLimited, "at most %d pending replies", maxPending),
			`SELECT count(*) FROM persona_messages WHERE session_id = $1 AND status = 'pending'`, user.SessionID); err != nil {
			return err
		}
		for i, m := range []personas.Message{user, reply} {
			var err error
			out[i], err = scanMessage(q.QueryRow(ctx, `INSERT INTO persona_messages (id, session_id, role, content, status, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+messageCols,
				m.ID, m.SessionID, m.Role, m.Content, m.Status, m.CreatedAt.UnixMicro()))
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out[0], out[1], s.err("send message", err)
}

// ListMessages returns a page of the session's messages, newest first.
func (s Personas) ListMessages(ctx context.Context, sessionID string, r page.Request) (page.Page[personas.Message], error) {
	d := s.B.Dialect()
	size := r.Size(50, 1000)
	q, args := `SELECT `+messageCols+` FROM persona_messages WHERE session_id = $1`, []any{sessionID}
	if !r.After.IsZero() {
		q += ` AND seq < $2`
		args = append(args, r.After.Order)
	}
	q += ` ORDER BY seq DESC LIMIT $` + itoa(len(args)+1)
	return readPage(ctx, s.B.Read(), d, "list messages", q, append(args, size+1), size, scanMessage, personas.Key)
}

// FinishReply completes a pending message.
func (s Personas) FinishReply(ctx context.Context, id, content, status string, at time.Time) (personas.Message, error) {
	var out personas.Message
	err := s.B.Write(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `UPDATE persona_messages SET content = $1, status = $2, created_at = $3 WHERE id = $4 AND status = 'pending'`, content, status, at.UnixMicro(), id)
		if err != nil {
			return err
		}
		if n == 0 {
			return notFound("message")
		}
		out, err = scanMessage(q.QueryRow(ctx, `SELECT `+messageCols+` FROM persona_messages WHERE id = $1`, id))
		return err
	})
	return out, s.err("finish reply", err)
}

// SetReplyCharge records the hold of the attempt writing a pending reply.
func (s Personas) SetReplyCharge(ctx context.Context, id, charge string) error {
	n, err := s.exec(ctx, "set reply charge", `UPDATE persona_messages SET charge = $1 WHERE id = $2 AND status = 'pending'`, charge, id)
	if err == nil && n == 0 {
		return notFound("message")
	}
	return err
}

// LeaseSessions leases sessions with a pending reply.
func (s Personas) LeaseSessions(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]string, error) {
	d := s.B.Dialect()
	var out []string
	err := s.B.Write(ctx, func(q Querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, `UPDATE persona_sessions SET lease_until = $1 WHERE id IN (
			SELECT s.id FROM persona_sessions s WHERE s.lease_until <= $2
			AND EXISTS (SELECT 1 FROM persona_messages m WHERE m.session_id = s.id AND m.status = 'pending')
			ORDER BY s.lease_until, s.id LIMIT $3`+d.SkipLocked+`) RETURNING id`, now.Add(lease).UnixMicro(), now.UnixMicro(), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			out = append(out, id)
		}
		return rows.Err()
	})
	return out, s.err("lease sessions", err)
}

// NextReply returns the session's oldest pending reply.
func (s Personas) NextReply(ctx context.Context, sessionID string) (personas.Message, error) {
	m, err := scanMessage(s.B.Read().QueryRow(ctx, `SELECT `+messageCols+` FROM persona_messages WHERE session_id = $1 AND status = 'pending' ORDER BY seq LIMIT 1`, sessionID))
	if s.B.Dialect().NoRows(err) {
		return personas.Message{}, notFound("reply")
	}
	return m, s.err("next reply", err)
}

// RenewLease extends the session's lease.
func (s Personas) RenewLease(ctx context.Context, sessionID string, until time.Time) error {
	_, err := s.exec(ctx, "renew lease", `UPDATE persona_sessions SET lease_until = $1 WHERE id = $2`, until.UnixMicro(), sessionID)
	return err
}

// ReleaseSession ends the session's lease.
func (s Personas) ReleaseSession(ctx context.Context, sessionID string) error {
	_, err := s.exec(ctx, "release session", `UPDATE persona_sessions SET lease_until = 0 WHERE id = $1`, sessionID)
	return err
}

// PutFile writes a file, refusing a new one past maxFiles.
func (s Personas) PutFile(ctx context.Context, personaID string, f personas.File, maxFiles int) error {
	err := s.B.Write(ctx, func(q Querier) error {
		if d := s.B.Dialect(); d.Serialize != nil {
			if err := d.Serialize(ctx, q, "persona-files:"+personaID); err != nil {
				return err
			}
		}
		n, err := q.Exec(ctx, `UPDATE persona_files SET content = $1, updated_at = $2 WHERE persona_id = $3 AND name = $4`, f.Content, f.UpdatedAt.UnixMicro(), personaID, f.Name)
		if err != nil || n > 0 {
			return err
		}
		var count int
		if err := q.QueryRow(ctx, `SELECT count(*) FROM persona_files WHERE persona_id = $1`, personaID).Scan(&count); err != nil {
			return err
		}
		if count >= maxFiles {
			return fault.Newf(fault.Invalid, "a persona holds at most %d files", maxFiles)
		}
		_, err = q.Exec(ctx, `INSERT INTO persona_files (persona_id, name, content, updated_at) VALUES ($1, $2, $3, $4)`, personaID, f.Name, f.Content, f.UpdatedAt.UnixMicro())
		return err
	})
	return s.err("put file", err)
}

func scanFile(r Row) (personas.File, error) {
	var f personas.File
	var at int64
	err := r.Scan(&f.Name, &f.Content, &at)
	f.UpdatedAt = fromMicro(at)
	return f, err
}

// GetFile returns a file.
func (s Personas) GetFile(ctx context.Context, personaID, name string) (personas.File, error) {
	f, err := scanFile(s.B.Read().QueryRow(ctx, `SELECT name, content, updated_at FROM persona_files WHERE persona_id = $1 AND name = $2`, personaID, name))
	if s.B.Dialect().NoRows(err) {
		return personas.File{}, notFound("file")
	}
	return f, s.err("get file", err)
}

// ListFiles returns the persona's files by name.
func (s Personas) ListFiles(ctx context.Context, personaID string) ([]personas.File, error) {
	return readAll(ctx, s.B.Read(), s.B.Dialect(), "list files",
		`SELECT name, content, updated_at FROM persona_files WHERE persona_id = $1 ORDER BY name`+s.B.Dialect().Binary, scanFile, personaID)
}

// DeleteFile deletes a file.
func (s Personas) DeleteFile(ctx context.Context, personaID, name string) error {
	n, err := s.exec(ctx, "delete file", `DELETE FROM persona_files WHERE persona_id = $1 AND name = $2`, personaID, name)
	if err == nil && n == 0 {
		return notFound("file")
	}
	return err
}

// GetMessage returns a message by ID, or fault.NotFound (for a broker
// that carries message IDs between processes).
func (s Personas) GetMessage(ctx context.Context, id string) (personas.Message, error) {
	m, err := scanMessage(s.B.Read().QueryRow(ctx, `SELECT `+messageCols+` FROM persona_messages WHERE id = $1`, id))
	if s.B.Dialect().NoRows(err) {
		return personas.Message{}, notFound("message")
	}
	return m, s.err("get message", err)
}
