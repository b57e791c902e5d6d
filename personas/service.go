package personas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/page"
)

// Limits and defaults; see the package doc.
const (
	MaxNameLen    = 100
	MaxMessageLen = 32000
	MaxFiles      = 32
	MaxFileBytes  = 64 << 10
	// MaxPersonas bounds a wallet's personas, MaxSessions a persona's
	// sessions, MaxPendingReplies the replies a session has waiting.
	MaxPersonas       = 100
	MaxSessions       = 1000
	MaxPendingReplies = 8
	DefaultPageSize   = 50
	MaxPageSize       = 200
	DefaultWorkers    = 4
	DefaultMaxTokens  = 1024
	DefaultLease      = 2 * time.Minute
)

// Public messages.
const (
	MsgPersonaNotFound = "persona not found"
	MsgNotOwner        = "you do not own this persona"
	MsgSessionNotFound = "session not found"
	MsgMessageNotFound = "message not found"
	MsgFileNotFound    = "file not found"
	MsgUnknownPersonal = "unknown personality_id: see GET /api/personas/personalities"
	MsgNameLength      = "name must be between 1 and 100 characters"
	MsgContentRequired = "content is required"
	MsgContentTooLong  = "content must be at most 32000 characters"
	MsgFileName        = "file names are 1-100 letters, digits, '.', '-' or '_'"
	MsgFileTooLarge    = "a file holds at most 65536 bytes"
	MsgNoModel         = "personas are not available: no model is configured"
	MsgTooManyPersonas = "a wallet holds at most 100 personas: delete one first"
	MsgTooManySessions = "a persona holds at most 1000 sessions: delete one first"
	MsgTooManyPending  = "8 replies are already pending in this session: wait for one to finish"
)

// Event is what a session's clients receive: a new or finished message
// (Type "message"), or part of a reply being written (Type "delta").
type Event struct {
	Type    string
	Message *Message // for "message"
	// For "delta": the reply's ID and the text it adds.
	MessageID string
	Delta     string
}

// Broker carries a session's events to its subscribers. Subscribers of
// one session receive its events in the order they were published. The
// default, LocalBroker, reaches the subscribers of this process; a broker
// over PostgreSQL's LISTEN/NOTIFY reaches every process's.
type Broker interface {
	Publish(ctx context.Context, sessionID string, e Event) error
	// Subscribe returns a channel of the session's events and a function
	// that ends the subscription (and closes the channel).
	Subscribe(sessionID string) (<-chan Event, func())
}

// Options configures a [Service].
type Options struct {
	// Inference generates and bills the replies; required for replies.
	Inference *inference.Service
	// Model is the catalog model replies are written with; required.
	Model string
	// Personalities are added to the shipped Templates (an ID of theirs
	// replaces a template's).
	Personalities []Personality
	// Broker carries events; nil means a LocalBroker.
	Broker Broker
	// Workers bounds the sessions replied to at once in this process
	// (DefaultWorkers); MaxTokens bounds a reply (DefaultMaxTokens).
	Workers   int
	MaxTokens uint64
	// ContextTokens is the history's budget, system prompt included;
	// zero means three quarters of the model's context length, less
	// MaxTokens.
	ContextTokens int
	// Lease is how long a worker holds a session it answers before
	// another (of any process) may take it over, when the worker's
	// process died (DefaultLease).
	Lease  time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is personas, their sessions and their replies.
type Service struct {
	store  Store
	opts   Options
	log    *slog.Logger
	broker Broker
	tmpl   map[string]Personality
	order  []string
	kick   chan struct{}

	mu      sync.Mutex
	running map[string]context.CancelFunc // session -> the reply being written
	counted map[string]int64              // message ID -> its tokens

}

// NewService returns the service over store.
func NewService(store Store, opts Options) *Service {
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.MaxTokens == 0 {
		opts.MaxTokens = DefaultMaxTokens
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	s := &Service{store: store, opts: opts, log: opts.Logger, broker: opts.Broker, tmpl: map[string]Personality{},
		kick: make(chan struct{}, 1), running: map[string]context.CancelFunc{}, counted: map[string]int64{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.broker == nil {
		s.broker = NewLocalBroker()
	}
	for _, p := range append(Templates(), opts.Personalities...) {
		if _, dup := s.tmpl[p.ID]; !dup {
			s.order = append(s.order, p.ID)
		}
		s.tmpl[p.ID] = p
	}
	return s
}

// Personalities returns the templates, shipped ones first.
func (s *Service) Personalities() []Personality {
	out := make([]Personality, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.tmpl[id])
	}
	return out
}

func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n < 1 || n > MaxNameLen || !utf8.ValidString(name) {
		return "", fault.New(fault.Invalid, MsgNameLength)
	}
	return name, nil
}

// CreatePersona creates a persona of the account from a template.
func (s *Service) CreatePersona(ctx context.Context, account, personalityID, name string) (Persona, error) {
	if _, ok := s.tmpl[personalityID]; !ok {
		return Persona{}, fault.New(fault.Invalid, MsgUnknownPersonal)
	}
	name, err := checkName(name)
	if err != nil {
		return Persona{}, err
	}
	p := Persona{ID: uuid.NewString(), Account: account, PersonalityID: personalityID, Name: name, CreatedAt: s.opts.Now().UTC().Truncate(time.Microsecond)}
	if err := s.store.CreatePersona(ctx, p, MaxPersonas); err != nil {
		if fault.CodeOf(err) == fault.Invalid {
			return Persona{}, fault.Wrap(err, fault.Invalid, MsgTooManyPersonas)
		}
		return Persona{}, err
	}
	return p, nil
}

// ListPersonas returns the account's personas, oldest first.
func (s *Service) ListPersonas(ctx context.Context, account string) ([]Persona, error) {
	return s.store.ListPersonas(ctx, account)
}

// GetPersona returns the account's persona: fault.NotFound "persona not
// found", or fault.Forbidden "you do not own this persona".
func (s *Service) GetPersona(ctx context.Context, account, id string) (Persona, error) {
	p, err := s.store.GetPersona(ctx, id)
	if fault.CodeOf(err) == fault.NotFound {
		return Persona{}, fault.Wrap(err, fault.NotFound, MsgPersonaNotFound)
	}
	if err != nil {
		return Persona{}, err
	}
	if p.Account != account {
		return Persona{}, fault.New(fault.Forbidden, MsgNotOwner)
	}
	return p, nil
}

// DeletePersona deletes the persona, its sessions, messages and files,
// and cancels its replies in progress.
func (s *Service) DeletePersona(ctx context.Context, account, id string) error {
	if _, err := s.GetPersona(ctx, account, id); err != nil {
		return err
	}
	sessions, err := s.store.ListSessions(ctx, id)
	if err != nil {
		return err
	}
	if err := s.store.DeletePersona(ctx, account, id); err != nil {
		if fault.CodeOf(err) == fault.NotFound {
			return fault.Wrap(err, fault.NotFound, MsgPersonaNotFound)
		}
		return err
	}
	for _, ss := range sessions {
		s.cancelReply(ss.ID)
	}
	return nil
}

// session returns the account's persona's session.
func (s *Service) session(ctx context.Context, account, personaID, id string) (Persona, Session, error) {
	p, err := s.GetPersona(ctx, account, personaID)
	if err != nil {
		return Persona{}, Session{}, err
	}
	ss, err := s.store.GetSession(ctx, personaID, id)
	if fault.CodeOf(err) == fault.NotFound {
		return Persona{}, Session{}, fault.Wrap(err, fault.NotFound, MsgSessionNotFound)
	}
	return p, ss, err
}

// CreateSession opens a session with the account's persona.
func (s *Service) CreateSession(ctx context.Context, account, personaID, name string) (Session, error) {
	if _, err := s.GetPersona(ctx, account, personaID); err != nil {
		return Session{}, err
	}
	name, err := checkName(name)
	if err != nil {
		return Session{}, err
	}
	ss := Session{ID: uuid.NewString(), PersonaID: personaID, Name: name, CreatedAt: s.opts.Now().UTC().Truncate(time.Microsecond)}
	if err := s.store.CreateSession(ctx, ss, MaxSessions); err != nil {
		if fault.CodeOf(err) == fault.Invalid {
			return Session{}, fault.Wrap(err, fault.Invalid, MsgTooManySessions)
		}
		return Session{}, err
	}
	return ss, nil
}

// ListSessions returns the persona's sessions, oldest first.
func (s *Service) ListSessions(ctx context.Context, account, personaID string) ([]Session, error) {
	if _, err := s.GetPersona(ctx, account, personaID); err != nil {
		return nil, err
	}
	return s.store.ListSessions(ctx, personaID)
}

// DeleteSession deletes the session and its messages, and cancels a
// reply in progress.
func (s *Service) DeleteSession(ctx context.Context, account, personaID, id string) error {
	if _, _, err := s.session(ctx, account, personaID, id); err != nil {
		return err
	}
	if err := s.store.DeleteSession(ctx, personaID, id); err != nil {
		if fault.CodeOf(err) == fault.NotFound {
			return fault.Wrap(err, fault.NotFound, MsgSessionNotFound)
		}
		return err
	}
	s.cancelReply(id)
	return nil
}

// Messages returns up to limit messages (DefaultPageSize, at most
// MaxPageSize) just older than the message before (its ID; "" for the
// latest), in chronological order, and whether older ones exist.
func (s *Service) Messages(ctx context.Context, account, personaID, sessionID, before string, limit int) ([]Message, bool, error) {
	if _, _, err := s.session(ctx, account, personaID, sessionID); err != nil {
		return nil, false, err
	}
	switch {
	case limit <= 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		limit = MaxPageSize
	}
	r := page.Request{Limit: limit}
	if before != "" {
		m, err := s.findMessage(ctx, sessionID, before)
		if err != nil {
			return nil, false, err
		}
		r.After = Key(m)
	}
	p, err := s.store.ListMessages(ctx, sessionID, r)
	if err != nil {
		return nil, false, err
	}
	out := make([]Message, len(p.Items))
	for i, m := range p.Items {
		out[len(out)-1-i] = m
	}
	return out, p.More, nil
}

// findMessage finds a message of the session by ID (pages through the
// session: used only for a cursor the client holds).
func (s *Service) findMessage(ctx context.Context, sessionID, id string) (Message, error) {
	r := page.Request{Limit: 1000}
	for {
		p, err := s.store.ListMessages(ctx, sessionID, r)
		if err != nil {
			return Message{}, err
		}
		for _, m := range p.Items {
			if m.ID == id {
				return m, nil
			}
		}
		if !p.More {
			return Message{}, fault.New(fault.NotFound, MsgMessageNotFound)
		}
		r.After = p.Next
	}
}

// Send stores the user's message and a pending reply, tells the
// session's clients, and returns at once: the reply is written in the
// background. It returns the user's message and the pending reply.
func (s *Service) Send(ctx context.Context, account, personaID, sessionID, content string) (Message, Message, error) {
	if s.opts.Inference == nil || s.opts.Model == "" {
		return Message{}, Message{}, fault.New(fault.Unavailable, MsgNoModel)
	}
	if strings.TrimSpace(content) == "" {
		return Message{}, Message{}, fault.New(fault.Invalid, MsgContentRequired)
	}
	if utf8.RuneCountInString(content) > MaxMessageLen {
		return Message{}, Message{}, fault.New(fault.Invalid, MsgContentTooLong)
	}
	if _, _, err := s.session(ctx, account, personaID, sessionID); err != nil {
		return Message{}, Message{}, err
	}
	// A message is taken only from a wallet that can pay for its reply,
	// and a session queues at most MaxPendingReplies: what a wallet
	// stores is bounded by what it pays.
	if err := s.opts.Inference.CheckFunds(ctx, account); err != nil {
		return Message{}, Message{}, err
	}
	now := s.opts.Now().UTC()
	u, r, err := s.store.Send(ctx,
		Message{ID: uuid.NewString(), SessionID: sessionID, Role: RoleUser, Content: content, CreatedAt: now, Status: StatusComplete},
		Message{ID: uuid.NewString(), SessionID: sessionID, Role: RoleAssistant, CreatedAt: now, Status: StatusPending},
		MaxPendingReplies)
	switch fault.CodeOf(err) {
	case fault.NotFound:
		return Message{}, Message{}, fault.Wrap(err, fault.NotFound, MsgSessionNotFound)
	case fault.RateLimited:
		return Message{}, Message{}, fault.Wrap(err, fault.RateLimited, MsgTooManyPending)
	}
	if err != nil {
		return Message{}, Message{}, err
	}
	s.publish(ctx, sessionID, Event{Type: "message", Message: &u})
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return u, r, nil
}

// Await waits for a reply (the pending message Send returned) to finish
// and returns it, complete or failed.
func (s *Service) Await(ctx context.Context, sessionID, replyID string) (Message, error) {
	events, stop := s.broker.Subscribe(sessionID)
	defer stop()
	for {
		m, err := s.findMessage(ctx, sessionID, replyID)
		if err != nil {
			return Message{}, err
		}
		if m.Status != StatusPending {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case e, ok := <-events:
			if !ok {
				return Message{}, errors.New("personas: subscription ended")
			}
			if e.Type == "message" && e.Message.ID == replyID && e.Message.Status != StatusPending {
				return *e.Message, nil
			}
		case <-time.After(2 * time.Second): // another process may have written it
		}
	}
}

// Subscribe returns the session's events (see Broker) for the account.
func (s *Service) Subscribe(ctx context.Context, account, personaID, sessionID string) (<-chan Event, func(), error) {
	if _, _, err := s.session(ctx, account, personaID, sessionID); err != nil {
		return nil, nil, err
	}
	ch, stop := s.broker.Subscribe(sessionID)
	return ch, stop, nil
}

func (s *Service) publish(ctx context.Context, sessionID string, e Event) {
	if err := s.broker.Publish(context.WithoutCancel(ctx), sessionID, e); err != nil {
		s.log.WarnContext(ctx, "persona event not published", "session", sessionID, "err", err)
	}
}

func (s *Service) cancelReply(sessionID string) {
	s.mu.Lock()
	cancel := s.running[sessionID]
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Run writes replies until ctx ends: it leases sessions with pending
// replies and answers each session's in order, at most Workers sessions
// at a time.
func (s *Service) Run(ctx context.Context) {
	if s.opts.Inference == nil || s.opts.Model == "" {
		return
	}
	sem := make(chan struct{}, s.opts.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		free := s.opts.Workers - len(sem)
		if free > 0 {
			ids, err := s.store.LeaseSessions(ctx, s.opts.Now(), s.opts.Lease, free)
			if err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "leasing persona sessions failed", "err", err)
			}
			for _, id := range ids {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					s.answer(ctx, id)
				})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// answer writes the session's pending replies, oldest first.
func (s *Service) answer(ctx context.Context, sessionID string) {
	defer func() { _ = s.store.ReleaseSession(context.WithoutCancel(ctx), sessionID) }()
	// Keep the lease while replies are written, however long they take:
	// another process takes the session over only from a dead worker.
	rctx, stop := context.WithCancel(ctx)
	var renew sync.WaitGroup
	defer renew.Wait()
	defer stop()
	renew.Go(func() {
		t := time.NewTicker(s.opts.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				if err := s.store.RenewLease(rctx, sessionID, s.opts.Now().Add(s.opts.Lease)); err != nil && rctx.Err() == nil {
					s.log.WarnContext(rctx, "renewing a persona session's lease failed", "session", sessionID, "err", err)
				}
			}
		}
	})
	for ctx.Err() == nil {
		reply, err := s.store.NextReply(ctx, sessionID)
		if err != nil {
			return // none left (or the session is gone)
		}
		if !s.reply(ctx, sessionID, reply) {
			return // left pending: the next lease tries again
		}
	}
}

// reply writes one reply; false if it left it pending (the ledger could
// not say whether an earlier attempt billed it, or the reply could not
// be stored).
func (s *Service) reply(ctx context.Context, sessionID string, reply Message) bool {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.running[sessionID] = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.running, sessionID)
		s.mu.Unlock()
	}()
	// An earlier attempt (a crashed worker's) recorded its hold: it was
	// billed if the hold is no longer open. Releasing it tells which.
	paid := false
	if reply.Charge != "" {
		err := s.opts.Inference.ReleaseHold(ctx, reply.Charge)
		switch {
		case errors.Is(err, fault.NotFound):
			paid = true
		case err != nil:
			s.log.WarnContext(ctx, "persona reply left pending: its earlier charge could not be checked", "reply", reply.ID, "err", err)
			return false
		}
	}
	content, summary, err := s.generate(rctx, sessionID, reply, paid)
	status := StatusComplete
	if err != nil {
		if rctx.Err() != nil && ctx.Err() == nil {
			// Canceled: the session or persona was deleted.
			_, _ = s.store.FinishReply(context.WithoutCancel(ctx), reply.ID, "reply canceled", StatusFailed, s.opts.Now())
			return true
		}
		if ctx.Err() != nil {
			return false // shutting down: another worker takes it over
		}
		status, content = StatusFailed, failure(err)
	}
	if status == StatusComplete && summary != nil {
		s.chargeSummary(ctx, reply, *summary)
	}
	done, ferr := s.store.FinishReply(context.WithoutCancel(ctx), reply.ID, content, status, s.opts.Now())
	if ferr != nil {
		if fault.CodeOf(ferr) != fault.NotFound {
			s.log.WarnContext(ctx, "persona reply not stored; it will be written again", "reply", reply.ID, "err", ferr)
			return false
		}
		return true // the session went away meanwhile
	}
	s.publish(ctx, sessionID, Event{Type: "message", Message: &done})
	return true
}

// summaryUsage is what a history summary cost, billed with its reply.
type summaryUsage struct {
	account, persona string
	usage            inference.Usage
}

// chargeSummary bills the history summary a reply was written with, once
// per reply (keyed by the reply's ID: an attempt after a crash finds the
// earlier charge).
func (s *Service) chargeSummary(ctx context.Context, reply Message, su summaryUsage) {
	_, err := s.opts.Inference.ChargeUsage(context.WithoutCancel(ctx), su.account, s.opts.Model, su.usage,
		"persona "+su.persona+", history summary", "persona-summary:"+reply.ID)
	if err != nil && fault.CodeOf(err) != fault.Conflict {
		s.log.WarnContext(ctx, "persona history summary not billed", "reply", reply.ID, "err", err)
	}
}

// failure is what a failed reply says.
func failure(err error) string {
	if msg := fault.MessageOf(err); msg != "" {
		return "reply failed: " + msg
	}
	return "reply failed"
}

// generate streams the reply from the model, publishing deltas, and
// returns its text and the history summary it was written with, if the
// model wrote one. The request is billed to the persona's wallet, its
// hold recorded on the reply first; a reply an earlier attempt billed
// already (paid) is written again unbilled.
func (s *Service) generate(ctx context.Context, sessionID string, reply Message, paid bool) (string, *summaryUsage, error) {
	ss, p, err := s.sessionOf(ctx, sessionID)
	if err != nil {
		return "", nil, err
	}
	if !paid {
		// The summary is made before the reply's hold: make sure the
		// wallet can pay for a reply at all first.
		if err := s.opts.Inference.CheckFunds(ctx, p.Account); err != nil {
			return "", nil, err
		}
	}
	req, su, err := s.request(ctx, p, ss, reply)
	if err != nil {
		return "", nil, err
	}
	var st inference.Stream
	if paid {
		for attempt := 0; ; attempt++ {
			st, err = s.unbilled(ctx, req)
			if err == nil || attempt == 2 || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 500 * time.Millisecond)
		}
	} else {
		st, err = s.opts.Inference.StreamWith(ctx, p.Account, req, inference.CallOptions{
			Label: "persona " + p.Name,
			OnHold: func(ctx context.Context, holdID string) error {
				return s.store.SetReplyCharge(ctx, reply.ID, holdID)
			},
		})
	}
	if err != nil {
		return "", nil, err
	}
	defer st.Close()
	// A session deleted through another process cancels the reply too:
	// look for it every second while the reply streams.
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-watch.C:
				if _, err := s.store.SessionByID(ctx, sessionID); fault.CodeOf(err) == fault.NotFound {
					s.cancelReply(sessionID)
					_ = st.Close()
					return
				}
			}
		}
	}()
	var b strings.Builder
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if su != nil {
				su.account, su.persona = p.Account, p.Name
			}
			return b.String(), su, nil
		}
		if err != nil {
			return "", nil, err
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != "" {
				b.WriteString(ch.Delta.Content)
				s.publish(ctx, sessionID, Event{Type: "delta", MessageID: reply.ID, Delta: ch.Delta.Content})
			}
		}
	}
}

// unbilled starts req through the model's unbilled provider: for a reply
// already paid for, and for history summaries (billed with their reply).
func (s *Service) unbilled(ctx context.Context, req *inference.ChatRequest) (inference.Stream, error) {
	m, err := s.opts.Inference.Model(s.opts.Model)
	if err != nil {
		return nil, err
	}
	return m.ChatCompletionStream(ctx, req)
}

// sessionOf returns a session and its persona.
func (s *Service) sessionOf(ctx context.Context, sessionID string) (Session, Persona, error) {
	ss, err := s.store.SessionByID(ctx, sessionID)
	if err != nil {
		return Session{}, Persona{}, err
	}
	p, err := s.store.GetPersona(ctx, ss.PersonaID)
	return ss, p, err
}

// request builds the model request for a reply: the system prompt, the
// workspace files, and the history up to the reply, compacted to the
// budget; and the summary's usage if the model summarized older turns.
func (s *Service) request(ctx context.Context, p Persona, ss Session, reply Message) (*inference.ChatRequest, *summaryUsage, error) {
	tmpl, ok := s.tmpl[p.PersonalityID]
	if !ok {
		tmpl = Personality{System: "You are a helpful persona."}
	}
	var sys strings.Builder
	sys.WriteString(tmpl.System)
	fmt.Fprintf(&sys, "\n\nYour name in this conversation is %q.", p.Name)
	files, err := s.store.ListFiles(ctx, p.ID)
	if err != nil {
		return nil, nil, err
	}
	if len(files) > 0 {
		sys.WriteString("\n\nYour workspace files (your notes and memory):")
		for _, f := range files {
			fmt.Fprintf(&sys, "\n--- %s ---\n%s", f.Name, f.Content)
		}
	}
	// The history before the reply, oldest first (failed and pending
	// replies left out).
	var history []Message
	r := page.Request{After: Key(reply), Limit: 1000}
	for {
		pg, err := s.store.ListMessages(ctx, ss.ID, r)
		if err != nil {
			return nil, nil, err
		}
		history = append(history, pg.Items...)
		if !pg.More || len(history) > 10000 {
			break
		}
		r.After = pg.Next
	}
	msgs := make([]inference.Message, 0, len(history)+2)
	ids := make([]string, 0, len(history))
	for i := len(history) - 1; i >= 0; i-- {
		m := history[i]
		if m.Status != StatusComplete {
			continue
		}
		msgs = append(msgs, inference.Message{Role: m.Role, Content: m.Content})
		ids = append(ids, m.ID)
	}
	msgs, su, err := s.compact(ctx, sys.String(), msgs, ids)
	if err != nil {
		return nil, nil, err
	}
	return &inference.ChatRequest{Model: s.opts.Model, Messages: msgs, MaxTokens: s.opts.MaxTokens}, su, nil
}

// budget is the history's budget in tokens, system prompt included.
func (s *Service) budget() (int64, error) {
	budget := int64(s.opts.ContextTokens)
	if budget <= 0 {
		m, err := s.opts.Inference.Catalog().Lookup(s.opts.Model)
		if err != nil {
			return 0, err
		}
		budget = int64(m.ContextLength)*3/4 - int64(s.opts.MaxTokens)
	}
	return max(budget, 256), nil
}

// maxCounted bounds the message counts a Service keeps.
const maxCounted = 1 << 14

// messageTokens is inference's count of msgs[i], whose message ID is
// ids[i] (if ids has it): a finished message never changes, so its count
// is kept (up to maxCounted of them; then they are forgotten at once).
func (s *Service) messageTokens(ids []string, msgs []inference.Message, i int) int64 {
	if i >= len(ids) || ids[i] == "" {
		return s.opts.Inference.MessageTokens(msgs[i])
	}
	s.mu.Lock()
	n, ok := s.counted[ids[i]]
	s.mu.Unlock()
	if ok {
		return n
	}
	n = s.opts.Inference.MessageTokens(msgs[i])
	s.mu.Lock()
	if len(s.counted) >= maxCounted {
		clear(s.counted)
	}
	s.counted[ids[i]] = n
	s.mu.Unlock()
	return n
}

// cutNote ends a system prompt cut to fit the budget.
const cutNote = "\n(The rest of your workspace files is left out: it does not fit the model's context.)"

// cut returns text cut to at most n bytes, at a rune boundary: at most n
// tokens, as byte-level BPE never makes more tokens than bytes.
func cut(text string, n int64) string {
	if int64(len(text)) <= n {
		return text
	}
	i := int(max(n, 0))
	for i > 0 && !utf8.RuneStart(text[i]) {
		i--
	}
	return text[:i]
}

// compact fits the history into the budget, counting tokens exactly as
// the inference service's check against the model's context does: the
// system prompt takes at most half of it (its workspace files are cut
// past that); the newest turns that fit are kept, the latest one always;
// the older ones are replaced by a summary the model writes (billed with
// the reply, only if the reply is), or, if that fails, by a note that
// they were left out; and if the summary does not fit with the kept
// turns, the oldest of those are dropped, then the summary.
func (s *Service) compact(ctx context.Context, system string, msgs []inference.Message, ids []string) ([]inference.Message, *summaryUsage, error) {
	inf := s.opts.Inference
	budget, err := s.budget()
	if err != nil {
		return nil, nil, err
	}
	sysMsg := inference.Message{Role: inference.RoleSystem, Content: system}
	if all := append([]inference.Message{sysMsg}, msgs...); inference.PromptBound(all) <= budget {
		return all, nil, nil // fits by its size alone: nothing to count
	}
	if t := inf.MessageTokens(sysMsg); t > budget/2 {
		sysMsg.Content = cut(system, budget/2-int64(len(cutNote))-16) + cutNote
	}
	used := inference.PromptOverhead + inf.MessageTokens(sysMsg)
	keep := len(msgs)
	tokens := make([]int64, len(msgs))
	for keep > 0 {
		t := s.messageTokens(ids, msgs, keep-1)
		if used+t > budget && keep < len(msgs) {
			break
		}
		tokens[keep-1] = t
		used += t
		keep--
	}
	out := []inference.Message{sysMsg}
	kept := msgs[keep:]
	var su *summaryUsage
	if keep > 0 {
		text, u := s.summary(ctx, msgs[:keep], ids, budget-used)
		if u != nil {
			su = &summaryUsage{usage: *u}
		}
		sum := inference.Message{Role: inference.RoleSystem, Content: text}
		used += inf.MessageTokens(sum)
		first := keep
		for used > budget && len(kept) > 1 {
			used -= tokens[first]
			first++
			kept = kept[1:]
		}
		if used <= budget {
			out = append(out, sum)
		}
	}
	return append(out, kept...), su, nil
}

// summary summarizes older turns, within budget tokens of input, through
// the model's unbilled provider, returning its text and its usage (nil
// when the model wrote none: the text is then a note that the turns are
// left out).
func (s *Service) summary(ctx context.Context, older []inference.Message, ids []string, budget int64) (string, *inference.Usage) {
	inf := s.opts.Inference
	var b strings.Builder
	var used int64
	for i := len(older) - 1; i >= 0; i-- { // newest first, until the budget
		line := older[i].Role + ": " + older[i].Content + "\n"
		t := s.messageTokens(ids, older, i) // the line's, or a token more
		if used+t > max(budget, 512) {
			break
		}
		used += t
		b.WriteString(line)
	}
	left := fmt.Sprintf("(%d earlier turns of this conversation are left out.)", len(older))
	if b.Len() == 0 {
		return left, nil
	}
	req := &inference.ChatRequest{Model: s.opts.Model, MaxTokens: 300, Messages: []inference.Message{
		{Role: inference.RoleSystem, Content: "Summarize the conversation below (its turns newest first) in at most 150 words, keeping names, facts, decisions and open questions."},
		{Role: inference.RoleUser, Content: b.String()},
	}}
	st, err := s.unbilled(ctx, req)
	if err != nil {
		return left, nil
	}
	defer st.Close()
	var text strings.Builder
	var usage *inference.Usage
	for {
		c, rerr := st.Recv()
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) || text.Len() == 0 {
				return left, nil
			}
			break
		}
		if c.Usage != nil {
			u := *c.Usage
			usage = &u
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	if usage == nil || usage.PromptTokens == 0 && usage.CompletionTokens == 0 {
		usage = &inference.Usage{PromptTokens: inf.PromptTokens(req.Messages), CompletionTokens: inf.CountTokens(text.String())}
	}
	return fmt.Sprintf("Summary of the %d earlier turns of this conversation: %s", len(older), text.String()), usage
}

// validFileName reports whether name is a workspace file name.
func validFileName(name string) bool {
	if len(name) < 1 || len(name) > MaxNameLen || name == "." || name == ".." {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ListFiles returns the persona's workspace files.
func (s *Service) ListFiles(ctx context.Context, account, personaID string) ([]File, error) {
	if _, err := s.GetPersona(ctx, account, personaID); err != nil {
		return nil, err
	}
	return s.store.ListFiles(ctx, personaID)
}

// GetFile returns a workspace file.
func (s *Service) GetFile(ctx context.Context, account, personaID, name string) (File, error) {
	if _, err := s.GetPersona(ctx, account, personaID); err != nil {
		return File{}, err
	}
	f, err := s.store.GetFile(ctx, personaID, name)
	if fault.CodeOf(err) == fault.NotFound {
		return File{}, fault.Wrap(err, fault.NotFound, MsgFileNotFound)
	}
	return f, err
}

// PutFile writes a workspace file (at most MaxFiles of MaxFileBytes).
func (s *Service) PutFile(ctx context.Context, account, personaID, name, content string) (File, error) {
	if !validFileName(name) {
		return File{}, fault.New(fault.Invalid, MsgFileName)
	}
	if len(content) > MaxFileBytes {
		return File{}, fault.New(fault.Invalid, MsgFileTooLarge)
	}
	if !utf8.ValidString(content) {
		return File{}, fault.New(fault.Invalid, "a file's content must be UTF-8 text")
	}
	if _, err := s.GetPersona(ctx, account, personaID); err != nil {
		return File{}, err
	}
	f := File{Name: name, Content: content, UpdatedAt: s.opts.Now().UTC().Truncate(time.Microsecond)}
	return f, s.store.PutFile(ctx, personaID, f, MaxFiles)
}

// DeleteFile deletes a workspace file.
func (s *Service) DeleteFile(ctx context.Context, account, personaID, name string) error {
	if _, err := s.GetPersona(ctx, account, personaID); err != nil {
		return err
	}
	err := s.store.DeleteFile(ctx, personaID, name)
	if fault.CodeOf(err) == fault.NotFound {
		return fault.Wrap(err, fault.NotFound, MsgFileNotFound)
	}
	return err
}
