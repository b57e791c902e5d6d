package sqlite

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/auth"
)

// A lookup that read the database before a key was written, and stores
// its result after the write invalidated the cache, must not store it.
func TestKeyCacheDropsRacingLookups(t *testing.T) {
	c := newKeyCache()
	hash := []byte("h")
	_, ok, gen := c.client(hash)
	require.False(t, ok)
	_, ok, mgen := c.master(hash)
	require.False(t, ok)
	c.invalidate() // a revocation committed meanwhile
	c.putClient(gen, auth.ClientKeyRecord{ID: "k", Hash: hash})
	c.putMaster(mgen, hash, "0xabc")
	_, ok, gen = c.client(hash)
	require.False(t, ok, "a result read before the write is not cached")
	_, ok, mgen = c.master(hash)
	require.False(t, ok)

	c.putClient(gen, auth.ClientKeyRecord{ID: "k", Hash: hash})
	c.putMaster(mgen, hash, "0xabc")
	k, ok, _ := c.client(hash)
	require.True(t, ok)
	require.Equal(t, "k", k.ID)
	a, ok, _ := c.master(hash)
	require.True(t, ok)
	require.Equal(t, "0xabc", a)
	c.invalidate()
	_, ok, _ = c.client(hash)
	require.False(t, ok)
}
