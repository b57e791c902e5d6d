package events_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/events"
)

func TestLocalDeliversBeforePublishReturns(t *testing.T) {
	var b events.Local
	var got1, got2 []events.Event
	stop1 := b.Subscribe(func(_ context.Context, e events.Event) { got1 = append(got1, e) })
	stop2 := b.Subscribe(func(ctx context.Context, e events.Event) {
		_, ok := ctx.Deadline()
		require.True(t, ok, "a handler's context is bounded")
		got2 = append(got2, e)
	})
	e := events.Event{Type: events.KeyRevoked, Account: "0xa", Subject: "k"}
	require.NoError(t, b.Publish(context.Background(), e))
	require.Equal(t, []events.Event{e}, got1)
	require.Equal(t, []events.Event{e}, got2)
	stop1()
	require.Equal(t, 1, b.Len())
	require.NoError(t, b.Publish(context.Background(), e))
	require.Len(t, got1, 1, "unsubscribed")
	require.Len(t, got2, 2)
	stop2()
	require.Zero(t, b.Len())
}

func TestLocalHandlerMayUnsubscribe(t *testing.T) {
	b := events.NewLocal()
	var stop func()
	n := 0
	stop = b.Subscribe(func(context.Context, events.Event) { n++; stop() })
	require.NoError(t, b.Publish(context.Background(), events.Event{Type: events.Resync}))
	require.NoError(t, b.Publish(context.Background(), events.Event{Type: events.Resync}))
	require.Equal(t, 1, n)
}
