package tunnel

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A route check never answers a request with a read that began before
// the request arrived, and requests arriving during a read share the
// next one.
func TestRouteChecksNeverStale(t *testing.T) {
	var rc routeChecks
	var reads atomic.Int64
	gate := make(chan struct{})
	started := make(chan struct{}, 4)
	fetch := func(context.Context) (Domain, error) {
		n := reads.Add(1)
		started <- struct{}{}
		<-gate
		return Domain{PortVersion: n}, nil
	}
	ctx := context.Background()
	first := make(chan Domain, 1)
	go func() { d, _ := rc.read(ctx, "x", fetch); first <- d }()
	<-started // read 1 is running
	// 50 requests arrive during read 1: they must wait for a read that
	// starts after them, and share it.
	var wg sync.WaitGroup
	got := make([]int64, 50)
	for i := range got {
		wg.Go(func() { d, _ := rc.read(ctx, "x", fetch); got[i] = d.PortVersion })
	}
	require.Eventually(t, func() bool { // all joined
		rc.mu.Lock()
		defer rc.mu.Unlock()
		p := rc.m["x"].pending
		return p != nil && p.waiters == len(got)
	}, 10*time.Second, time.Millisecond)
	gate <- struct{}{} // read 1 ends
	require.Equal(t, int64(1), (<-first).PortVersion)
	<-started // read 2 started
	gate <- struct{}{}
	wg.Wait()
	for _, v := range got {
		require.Equal(t, int64(2), v, "a request during read 1 is answered by read 2")
	}
	require.Equal(t, int64(2), reads.Load(), "shared")

	// Idle: the next request starts its own read.
	go func() { <-started; gate <- struct{}{} }()
	d, err := rc.read(ctx, "x", fetch)
	require.NoError(t, err)
	require.Equal(t, int64(3), d.PortVersion)
	rc.mu.Lock()
	require.Empty(t, rc.m, "nothing kept for an idle name")
	rc.mu.Unlock()

	// A request waiting on a shared read stops waiting when its context
	// ends.
	go func() { _, _ = rc.read(ctx, "x", fetch) }()
	<-started // read 4 is running
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := rc.read(cctx, "x", fetch); errc <- err }()
	require.Eventually(t, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		p := rc.m["x"].pending
		return p != nil && p.waiters == 1
	}, 10*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	gate <- struct{}{} // read 4 ends
	<-started          // read 5, which nobody awaits any more, still runs
	gate <- struct{}{}
	require.Eventually(t, func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.m) == 0 }, 10*time.Second, time.Millisecond)
}
