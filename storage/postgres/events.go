package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/perceptron-cloud/perceptron/events"
)

// EventBus returns the store's events.Bus over PostgreSQL's LISTEN/NOTIFY:
// an event published on one server process of the database reaches the
// subscribers of every process, its own at once (before Publish returns)
// and the others' through one notification, on the connection that
// listens for personas' events (see PersonaBroker). A listener that lost
// its connection delivers events.Resync once it listens again. The
// platform finds this method by type assertion.
func (s *Store) EventBus() events.Bus {
	b := s.broker.get(s)
	select {
	case <-b.ready:
	case <-time.After(5 * time.Second):
	}
	return b.bus
}

// pgEvents is the Bus of one process over the store's listener.
type pgEvents struct {
	b       *pgBroker
	channel string
	origin  string // this bus's ID: its own notifications are not delivered twice
	local   events.Local
}

var _ events.Bus = (*pgEvents)(nil)

func newPGEvents(b *pgBroker) *pgEvents {
	sum := sha256.Sum256([]byte("platform_events\x00" + b.s.schema))
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &pgEvents{b: b, channel: "platform_events_" + hex.EncodeToString(sum[:8]), origin: hex.EncodeToString(id[:])}
}

// envelope is a notification's payload: the event and who sent it.
type envelope struct {
	Origin string       `json:"o"`
	Event  events.Event `json:"e"`
}

// Publish notifies the other processes, then delivers e to this
// process's subscribers (also when the notification failed, which it
// returns).
func (p *pgEvents) Publish(ctx context.Context, e events.Event) error {
	payload, err := json.Marshal(envelope{Origin: p.origin, Event: e})
	if err == nil {
		_, err = p.b.s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, p.channel, string(payload))
	}
	p.local.Deliver(ctx, e)
	return err
}

// Subscribe subscribes in this process.
func (p *pgEvents) Subscribe(h events.Handler) func() { return p.local.Subscribe(h) }

// receive delivers another process's event.
func (p *pgEvents) receive(ctx context.Context, payload string) {
	var env envelope
	if json.Unmarshal([]byte(payload), &env) != nil || env.Origin == p.origin || env.Event.Type == "" {
		return
	}
	p.local.Deliver(ctx, env.Event)
}

// resync tells subscribers that events may have been lost.
func (p *pgEvents) resync(ctx context.Context) {
	p.local.Deliver(ctx, events.Event{Type: events.Resync})
}
