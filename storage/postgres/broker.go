package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/perceptron-cloud/perceptron/personas"
)

// PersonaBroker returns the store's personas.Broker over PostgreSQL's
// LISTEN/NOTIFY, so that a session's clients on every server process of
// the database receive all its events: each process publishes with
// pg_notify and one connection per process listens, then fans out to that
// process's subscribers. A message event carries the message's ID (the
// listener reads it back: a notification holds at most 8000 bytes), a
// delta its text (split when long). Events published while a listener is
// reconnecting are lost to it; its clients read the history. The
// platform finds this method by type assertion.
func (s *Store) PersonaBroker() personas.Broker { return s.broker.get(s) }

// pgBrokerOnce starts the broker on first use.
type pgBrokerOnce struct {
	mu sync.Mutex
	b  *pgBroker
}

func (o *pgBrokerOnce) get(s *Store) *pgBroker {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.b == nil {
		sum := sha256.Sum256([]byte("persona_events\x00" + s.schema))
		ctx, cancel := context.WithCancel(context.Background())
		o.b = &pgBroker{s: s, channel: "persona_events_" + hex.EncodeToString(sum[:8]), local: personas.NewLocalBroker(),
			cancel: cancel, done: make(chan struct{}), ready: make(chan struct{})}
		o.b.bus = newPGEvents(o.b)
		go o.b.listen(ctx)
	}
	return o.b
}

func (o *pgBrokerOnce) stop() {
	o.mu.Lock()
	b := o.b
	o.mu.Unlock()
	if b != nil {
		b.cancel()
		<-b.done
	}
}

type pgBroker struct {
	s       *Store
	channel string
	local   *personas.LocalBroker
	cancel  context.CancelFunc
	done    chan struct{}
	ready   chan struct{} // closed once the first LISTEN is in place
	once    sync.Once
	bus     *pgEvents // the platform's events, on the same listener
	missed  bool      // the listener has lost a connection: events may be lost
}

var _ personas.Broker = (*pgBroker)(nil)

// notice is a notification's payload.
type notice struct {
	Session string `json:"s"`
	Type    string `json:"t"`
	ID      string `json:"id,omitempty"` // the message, or the reply a delta belongs to
	Delta   string `json:"d,omitempty"`
}

// maxDelta keeps a notification under PostgreSQL's 8000-byte payload.
const maxDelta = 6000

// Publish notifies every process's listener.
func (b *pgBroker) Publish(ctx context.Context, sessionID string, e personas.Event) error {
	var notes []notice
	switch e.Type {
	case "message":
		notes = append(notes, notice{Session: sessionID, Type: "message", ID: e.Message.ID})
	case "delta":
		d := e.Delta
		for len(d) > maxDelta {
			cut := maxDelta
			for cut > 0 && !utf8.RuneStart(d[cut]) {
				cut--
			}
			notes = append(notes, notice{Session: sessionID, Type: "delta", ID: e.MessageID, Delta: d[:cut]})
			d = d[cut:]
		}
		notes = append(notes, notice{Session: sessionID, Type: "delta", ID: e.MessageID, Delta: d})
	default:
		return nil
	}
	for _, n := range notes {
		payload, err := json.Marshal(n)
		if err != nil {
			return err
		}
		if _, err := b.s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, b.channel, string(payload)); err != nil {
			return err
		}
	}
	return nil
}

// Subscribe subscribes in this process, once the listener is listening.
func (b *pgBroker) Subscribe(sessionID string) (<-chan personas.Event, func()) {
	select {
	case <-b.ready:
	case <-time.After(5 * time.Second):
	}
	return b.local.Subscribe(sessionID)
}

// listen keeps one connection listening, reconnecting with backoff.
func (b *pgBroker) listen(ctx context.Context) {
	defer close(b.done)
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		_ = b.listenOnce(ctx) // a lost connection: listen again
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (b *pgBroker) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, b.s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel}.Sanitize()); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.bus.channel}.Sanitize()); err != nil {
		return err
	}
	b.once.Do(func() { close(b.ready) })
	if b.missed {
		b.bus.resync(ctx) // listening again: what was published meanwhile is lost
	}
	b.missed = true // until the next LISTEN, from the next failure on
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == b.bus.channel {
			b.bus.receive(ctx, n.Payload)
			continue
		}
		var nt notice
		if json.Unmarshal([]byte(n.Payload), &nt) != nil {
			continue
		}
		switch nt.Type {
		case "message":
			m, err := b.s.Personas.GetMessage(ctx, nt.ID)
			if err != nil {
				continue // deleted meanwhile
			}
			_ = b.local.Publish(ctx, nt.Session, personas.Event{Type: "message", Message: &m})
		case "delta":
			_ = b.local.Publish(ctx, nt.Session, personas.Event{Type: "delta", MessageID: nt.ID, Delta: nt.Delta})
		}
	}
}
