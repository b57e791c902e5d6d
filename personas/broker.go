package personas

import (
	"context"
	"sync"
)

// LocalBroker is the Broker of one process. A subscriber that does not
// keep up (its buffer of 256 events full) is dropped: its channel is
// closed, and it subscribes again and reads the history.
type LocalBroker struct {
	mu   sync.Mutex
	subs map[string]map[*localSub]struct{}
}

type localSub struct {
	ch   chan Event
	once sync.Once
}

// NewLocalBroker returns an empty broker.
func NewLocalBroker() *LocalBroker { return &LocalBroker{subs: map[string]map[*localSub]struct{}{}} }

var _ Broker = (*LocalBroker)(nil)

// Publish sends e to the session's subscribers.
func (b *LocalBroker) Publish(_ context.Context, sessionID string, e Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs[sessionID] {
		select {
		case sub.ch <- e:
		default:
			delete(b.subs[sessionID], sub)
			sub.once.Do(func() { close(sub.ch) })
		}
	}
	return nil
}

// Subscribe subscribes to the session's events.
func (b *LocalBroker) Subscribe(sessionID string) (<-chan Event, func()) {
	sub := &localSub{ch: make(chan Event, 256)}
	b.mu.Lock()
	if b.subs[sessionID] == nil {
		b.subs[sessionID] = map[*localSub]struct{}{}
	}
	b.subs[sessionID][sub] = struct{}{}
	b.mu.Unlock()
	return sub.ch, func() {
		b.mu.Lock()
		delete(b.subs[sessionID], sub)
		if len(b.subs[sessionID]) == 0 {
			delete(b.subs, sessionID)
		}
		b.mu.Unlock()
		sub.once.Do(func() { close(sub.ch) })
	}
}
