package postgres_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/events"
	"github.com/perceptron-cloud/perceptron/storage/postgres"
)

// recorder collects the events a subscriber receives.
type recorder struct {
	mu  sync.Mutex
	got []events.Event
}

func (r *recorder) handle(_ context.Context, e events.Event) {
	r.mu.Lock()
	r.got = append(r.got, e)
	r.mu.Unlock()
}

func (r *recorder) events() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.got...)
}

// Two stores on one schema, as two server processes: an event published
// on one reaches the other's subscribers, and the publisher's own once,
// before Publish returns. A listener that lost its connection delivers a
// Resync once it listens again.
func TestEventBusAcrossProcesses(t *testing.T) {
	url := os.Getenv(envURL)
	if url == "" {
		t.Skip(envURL + " is not set; CI sets it to a throwaway server")
	}
	ctx := context.Background()
	schema := fmt.Sprintf("ev_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			conn.Close(ctx)
		}
	})
	open := func() *postgres.Store {
		s, err := postgres.Open(ctx, url, postgres.Options{Schema: schema, MaxConns: 4})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	var onA, onB recorder
	defer a.EventBus().Subscribe(onA.handle)()
	defer b.EventBus().Subscribe(onB.handle)()

	e := events.Event{Type: events.KeyRevoked, Account: "0xabc", Subject: "key-1"}
	require.NoError(t, a.EventBus().Publish(ctx, e))
	require.Equal(t, []events.Event{e}, onA.events(), "the publisher's subscribers, before Publish returns")
	require.Eventually(t, func() bool { return len(onB.events()) == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, e, onB.events()[0])
	time.Sleep(200 * time.Millisecond)
	require.Len(t, onA.events(), 1, "not delivered twice to the publisher")

	// Another schema's processes do not hear it.
	other, err := postgres.Open(ctx, url, postgres.Options{Schema: schema + "_x", MaxConns: 2})
	require.NoError(t, err)
	t.Cleanup(func() {
		other.Close()
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema + "_x"}.Sanitize()+" CASCADE")
			conn.Close(ctx)
		}
	})
	var onOther recorder
	defer other.EventBus().Subscribe(onOther.handle)()
	require.NoError(t, a.EventBus().Publish(ctx, e))
	require.Eventually(t, func() bool { return len(onB.events()) == 2 }, 5*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.Empty(t, onOther.events())

	// B's listener loses its connection: once it listens again, Resync.
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	// The listeners of this schema (A's and B's), and no other test's.
	sum := sha256.Sum256([]byte("platform_events\x00" + schema))
	channel := "platform_events_" + hex.EncodeToString(sum[:8])
	var killed int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN %' || $1 || '%'`, channel).Scan(&killed))
	require.Equal(t, 2, killed)
	require.Eventually(t, func() bool {
		for _, e := range onB.events() {
			if e.Type == events.Resync {
				return true
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "B resyncs")
	// And hears events again.
	e2 := events.Event{Type: events.DomainChanged, Subject: "d-1", Name: "name"}
	require.NoError(t, a.EventBus().Publish(ctx, e2))
	require.Eventually(t, func() bool { evs := onB.events(); return evs[len(evs)-1] == e2 }, 10*time.Second, time.Millisecond)
}
