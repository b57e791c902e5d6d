package storagetest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/release"
)

// TestReleaseStore checks release.Store: put, get, list and replace, with
// downloads that always come back as a non-nil slice.
func TestReleaseStore(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	a, b := as[release.Store](t, open(t)), as[release.Store](t, open(t))

	_, err := a.GetRelease(ctx, "1.0.0")
	requireFault(t, err, fault.NotFound, "getting a release from an empty store")
	all, err := a.ListReleases(ctx)
	require.NoError(t, err)
	require.Empty(t, all)

	r1 := release.Release{
		Version:     "1.0.0",
		Notes:       "# First\n\n- ünïcode notes",
		Downloads:   []string{"https://example.com/p-linux-amd64.tar.gz", "https://example.com/p-darwin-arm64.tar.gz"},
		PublishedAt: 1_700_000_000,
	}
	r2 := release.Release{Version: "1.1.0-beta.1", Notes: "", Downloads: []string{}, PublishedAt: 1_700_000_100}
	r3 := release.Release{Version: "0.9.0", Notes: "old", Downloads: nil, PublishedAt: 1_600_000_000}
	require.NoError(t, a.PutRelease(ctx, r1))
	require.NoError(t, b.PutRelease(ctx, r2))
	require.NoError(t, a.PutRelease(ctx, r3))

	got, err := b.GetRelease(ctx, "1.0.0")
	require.NoError(t, err)
	require.Equal(t, r1, got)
	got, err = a.GetRelease(ctx, "1.1.0-beta.1")
	require.NoError(t, err)
	require.Equal(t, r2, got)
	require.NotNil(t, got.Downloads, "empty downloads come back as a non-nil slice")
	got, err = a.GetRelease(ctx, "0.9.0")
	require.NoError(t, err)
	require.NotNil(t, got.Downloads, "nil downloads come back as a non-nil slice")
	require.Empty(t, got.Downloads)
	r3.Downloads = []string{}
	require.Equal(t, r3, got)

	// Versions match exactly.
	for _, v := range []string{"v1.0.0", "1.0", "1.0.0-rc.1", "1.0.0 ", ""} {
		_, err = a.GetRelease(ctx, v)
		requireFault(t, err, fault.NotFound, "getting release "+v)
	}

	all, err = b.ListReleases(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []release.Release{r1, r2, r3}, all)
	for _, r := range all {
		require.NotNil(t, r.Downloads, "release %s: listed downloads are non-nil", r.Version)
	}

	// Putting a version again replaces it.
	r1b := release.Release{Version: "1.0.0", Notes: "fixed notes", Downloads: []string{"https://example.com/new.tar.gz"}, PublishedAt: 1_700_000_050}
	require.NoError(t, b.PutRelease(ctx, r1b))
	got, err = a.GetRelease(ctx, "1.0.0")
	require.NoError(t, err)
	require.Equal(t, r1b, got)
	all, err = a.ListReleases(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []release.Release{r1b, r2, r3}, all)

	// Callers cannot change stored releases through slices they pass or get.
	in := release.Release{Version: "2.0.0", Downloads: []string{"https://example.com/a"}, PublishedAt: 1}
	require.NoError(t, a.PutRelease(ctx, in))
	in.Downloads[0] = "changed by caller"
	got, err = a.GetRelease(ctx, "2.0.0")
	require.NoError(t, err)
	require.Equal(t, []string{"https://example.com/a"}, got.Downloads)
	got.Downloads[0] = "changed by reader"
	all, err = a.ListReleases(ctx)
	require.NoError(t, err)
	for _, r := range all {
		if r.Version == "2.0.0" {
			r.Downloads[0] = "changed by lister"
		}
	}
	got, err = b.GetRelease(ctx, "2.0.0")
	require.NoError(t, err)
	require.Equal(t, []string{"https://example.com/a"}, got.Downloads)
}
