package sqlite

import (
	"sync"

	"github.com/perceptron-cloud/perceptron/auth"
)

// keyCache keeps the results of key lookups, which every API request
// makes. It is exact because this process is the only writer of the file:
// every write to the key tables clears it (invalidate), and a lookup that
// raced with such a write does not store its result (the generation
// changed). Misses are not cached.
type keyCache struct {
	mu      sync.Mutex
	gen     uint64
	clients map[string]auth.ClientKeyRecord // by hash
	masters map[string]string               // hash → address
}

// maxCachedKeys bounds the cache; past it, the cache starts over.
const maxCachedKeys = 100_000

func newKeyCache() *keyCache {
	return &keyCache{clients: map[string]auth.ClientKeyRecord{}, masters: map[string]string{}}
}

// client returns the cached client key with this hash and, for a miss,
// the generation to pass to putClient.
func (c *keyCache) client(hash []byte) (auth.ClientKeyRecord, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.clients[string(hash)]
	if ok {
		k.Hash = append([]byte(nil), k.Hash...)
	}
	return k, ok, c.gen
}

// putClient caches k if no key was written since generation gen.
func (c *keyCache) putClient(gen uint64, k auth.ClientKeyRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.clients) >= maxCachedKeys {
		clear(c.clients)
	}
	k.Hash = append([]byte(nil), k.Hash...)
	c.clients[string(k.Hash)] = k
}

// master returns the cached owner of the master key with this hash and,
// for a miss, the generation to pass to putMaster.
func (c *keyCache) master(hash []byte) (string, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.masters[string(hash)]
	return a, ok, c.gen
}

// putMaster caches the owner of a master key if no key was written since
// generation gen.
func (c *keyCache) putMaster(gen uint64, hash []byte, address string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.masters) >= maxCachedKeys {
		clear(c.masters)
	}
	c.masters[string(hash)] = address
}

// invalidate forgets every cached key; call it after each write to the
// key tables, once it committed or failed.
func (c *keyCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.clients)
	clear(c.masters)
}
