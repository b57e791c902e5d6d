package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/events"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/personas"
)

type personaJSON struct {
	ID            string `json:"id"`
	PersonalityID string `json:"personality_id"`
	Name          string `json:"name"`
	CreatedAt     int64  `json:"created_at"`
}

type sessionJSON struct {
	ID        string `json:"id"`
	PersonaID string `json:"persona_id"`
	Name      string `json:"name"`
	CreatedAt int64  `json:"created_at"`
}

type messageJSON struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Content   string `json:"content"`
	CreatedAt int64  `json:"created_at"`
	Status    string `json:"status"`
}

func toPersonaJSON(p personas.Persona) personaJSON {
	return personaJSON{ID: p.ID, PersonalityID: p.PersonalityID, Name: p.Name, CreatedAt: p.CreatedAt.Unix()}
}

func toSessionJSON(s personas.Session) sessionJSON {
	return sessionJSON{ID: s.ID, PersonaID: s.PersonaID, Name: s.Name, CreatedAt: s.CreatedAt.Unix()}
}

func toMessageJSON(m personas.Message) messageJSON {
	return messageJSON{ID: m.ID, Role: m.Role, Content: m.Content, CreatedAt: m.CreatedAt.Unix(), Status: m.Status}
}

func account(r *http.Request) string { return principal(r.Context()).Address }

func (s *server) personalities(w http.ResponseWriter, r *http.Request) {
	type pj struct {
		ID          string `json:"id"`
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	out := []pj{}
	for _, p := range s.p.Personas.Personalities() {
		out = append(out, pj{p.ID, p.Name, p.Description})
	}
	writeJSON(w, http.StatusOK, map[string]any{"personalities": out})
}

func (s *server) listPersonas(w http.ResponseWriter, r *http.Request) {
	ps, err := s.p.Personas.ListPersonas(r.Context(), account(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]personaJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, toPersonaJSON(p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"personas": out})
}

func (s *server) newPersona(w http.ResponseWriter, r *http.Request) {
	var req struct {
		PersonalityID string `json:"personality_id"`
		Name          string `json:"name"`
	}
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := s.p.Personas.CreatePersona(r.Context(), account(r), req.PersonalityID, req.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toPersonaJSON(p))
}

func (s *server) getPersona(w http.ResponseWriter, r *http.Request) {
	p, err := s.p.Personas.GetPersona(r.Context(), account(r), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toPersonaJSON(p))
}

var deleted = map[string]any{"status": "deleted"}

func (s *server) deletePersona(w http.ResponseWriter, r *http.Request) {
	if err := s.p.Personas.DeletePersona(r.Context(), account(r), r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deleted)
}

func (s *server) listSessions(w http.ResponseWriter, r *http.Request) {
	ss, err := s.p.Personas.ListSessions(r.Context(), account(r), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]sessionJSON, 0, len(ss))
	for _, x := range ss {
		out = append(out, toSessionJSON(x))
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

func (s *server) newSession(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	ss, err := s.p.Personas.CreateSession(r.Context(), account(r), r.PathValue("id"), req.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toSessionJSON(ss))
}

func (s *server) deleteSession(w http.ResponseWriter, r *http.Request) {
	if err := s.p.Personas.DeleteSession(r.Context(), account(r), r.PathValue("id"), r.PathValue("sid")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deleted)
}

func (s *server) listMessages(w http.ResponseWriter, r *http.Request) {
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			s.writeError(w, r, fault.New(fault.Invalid, "limit must be a non-negative integer"))
			return
		}
		limit = int(min(n, personas.MaxPageSize))
	}
	msgs, more, err := s.p.Personas.Messages(r.Context(), account(r), r.PathValue("id"), r.PathValue("sid"), r.URL.Query().Get("before"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]messageJSON, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, toMessageJSON(m))
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": out, "has_more": more})
}

func (s *server) newMessage(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Content string `json:"content"`
	}
	if err := decodeJSON(w, r, 256<<10, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	u, _, err := s.p.Personas.Send(r.Context(), account(r), r.PathValue("id"), r.PathValue("sid"), req.Content)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"message_id": u.ID})
}

type fileJSON struct {
	Name      string `json:"name"`
	Size      int    `json:"size"`
	UpdatedAt int64  `json:"updated_at"`
	Content   string `json:"content,omitempty"`
}

func (s *server) listFiles(w http.ResponseWriter, r *http.Request) {
	fs, err := s.p.Personas.ListFiles(r.Context(), account(r), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]fileJSON, 0, len(fs))
	for _, f := range fs {
		out = append(out, fileJSON{Name: f.Name, Size: len(f.Content), UpdatedAt: f.UpdatedAt.Unix()})
	}
	writeJSON(w, http.StatusOK, map[string]any{"files": out})
}

func (s *server) getFile(w http.ResponseWriter, r *http.Request) {
	f, err := s.p.Personas.GetFile(r.Context(), account(r), r.PathValue("id"), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileJSON{Name: f.Name, Size: len(f.Content), UpdatedAt: f.UpdatedAt.Unix(), Content: f.Content})
}

func (s *server) putFile(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Content *string `json:"content"`
	}
	if err := decodeJSON(w, r, 2*personas.MaxFileBytes+1024, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Content == nil {
		s.writeError(w, r, fault.New(fault.Invalid, "content is required"))
		return
	}
	f, err := s.p.Personas.PutFile(r.Context(), account(r), r.PathValue("id"), r.PathValue("name"), *req.Content)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileJSON{Name: f.Name, Size: len(f.Content), UpdatedAt: f.UpdatedAt.Unix()})
}

func (s *server) deleteFile(w http.ResponseWriter, r *http.Request) {
	if err := s.p.Personas.DeleteFile(r.Context(), account(r), r.PathValue("id"), r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deleted)
}

// streamEvent is an outbound frame of the persona stream.
type streamEvent struct {
	Type    string `json:"type"`
	Payload any    `json:"payload"`
}

// personaStream is the session's WebSocket: the client key as ?token=
// (or Authorization: Bearer), inbound {"type":"message","content":...}
// sent as by POST .../messages/new, outbound every new message and every
// reply's deltas; pings every 20 s; a bad frame gets an error event.
//
// A revoked key ends the stream: the revocation's event (on any process)
// closes it with status 1008 and reason "API key revoked", and every
// inbound message re-authenticates the key before it is sent, so none is
// accepted or charged once the revocation is stored, even if the event
// was lost; after a lost connection of the events' listener
// (events.Resync) every stream re-authenticates at once.
func (s *server) personaStream(w http.ResponseWriter, r *http.Request) {
	token, ok := bearer(r)
	if !ok {
		token = r.URL.Query().Get("token")
	}
	if token == "" {
		s.writeError(w, r, fault.New(fault.Unauthenticated, auth.MsgMissingToken))
		return
	}
	p, err := s.p.Auth.Authenticate(r.Context(), token)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if p.IsMaster() {
		s.writeError(w, r, errMasterKeyForbidden())
		return
	}
	pid, sid := r.PathValue("id"), r.PathValue("sid")
	evs, stop, err := s.p.Personas.Subscribe(r.Context(), p.Address, pid, sid)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer stop()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	// Tokens, not cookies, authenticate: any origin may connect.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(256 << 10)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	revoked := make(chan struct{})
	var revokeOnce sync.Once
	revoke := func() { revokeOnce.Do(func() { close(revoked) }) }
	unsub := s.p.Events.Subscribe(func(_ context.Context, e events.Event) {
		switch {
		case auth.Revokes(e, p.Address, p.Credential):
			revoke()
		case e.Type == events.Resync: // revocations may have been missed
			go func() {
				if _, err := s.p.Auth.Authenticate(ctx, token); fault.CodeOf(err) == fault.Unauthenticated {
					revoke()
				}
			}()
		}
	})
	defer unsub()
	out := make(chan streamEvent, 16)
	// Reader: inbound messages; the connection's end ends the stream.
	go func() {
		defer cancel()
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			var in struct {
				Type    string `json:"type"`
				Content string `json:"content"`
			}
			var e error
			switch {
			case typ != websocket.MessageText:
				e = fault.New(fault.Invalid, "frames are JSON text")
			case json.Unmarshal(data, &in) != nil:
				e = fault.New(fault.Invalid, "invalid JSON frame")
			case in.Type != "message":
				e = fault.New(fault.Invalid, `unknown frame type: want "message"`)
			default:
				if _, aerr := s.p.Auth.Authenticate(ctx, token); aerr != nil {
					if fault.CodeOf(aerr) == fault.Unauthenticated {
						revoke()
						return
					}
					e = aerr
					break
				}
				_, _, e = s.p.Personas.Send(ctx, p.Address, pid, sid, in.Content)
			}
			if e != nil {
				msg := fault.MessageOf(e)
				if msg == "" {
					msg = "internal server error"
				}
				select {
				case out <- streamEvent{Type: "error", Payload: map[string]string{"message": msg}}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	ping := time.NewTicker(20 * time.Second)
	defer ping.Stop()
	write := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		return c.Write(wctx, websocket.MessageText, b)
	}
	for {
		var err error
		select {
		case <-revoked:
			c.Close(websocket.StatusPolicyViolation, "API key revoked")
			return
		case <-ctx.Done():
			select {
			case <-revoked:
				c.Close(websocket.StatusPolicyViolation, "API key revoked")
			default:
				c.Close(websocket.StatusNormalClosure, "")
			}
			return
		case e, ok := <-evs:
			if !ok {
				c.Close(websocket.StatusTryAgainLater, "too slow: reconnect and read the history")
				return
			}
			switch e.Type {
			case "message":
				err = write(streamEvent{Type: "message", Payload: map[string]any{"message": toMessageJSON(*e.Message)}})
			case "delta":
				err = write(streamEvent{Type: "delta", Payload: map[string]any{"message_id": e.MessageID, "content": e.Delta}})
			}
		case e := <-out:
			err = write(e)
		case <-ping.C:
			pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
			err = c.Ping(pctx)
			pcancel()
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				s.log.DebugContext(ctx, "persona stream ended", "err", err)
			}
			return
		}
	}
}
