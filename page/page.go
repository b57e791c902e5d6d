// Package page is the one way Perceptron's lists are paged: newest first,
// each page strictly older than the one before it, ties broken by ID, and
// a flag that says whether more exist. Ledger entries, API keys, domains,
// feed items and persona messages all page with it, in Go and (as an
// opaque token) over HTTP.
package page

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Key is a position in a list sorted newest first by (Order, ID), both
// descending. Order is what the list sorts by: a time in Unix
// microseconds (feed items, messages, domains, keys) or a ledger sequence
// number (entries); ID breaks ties, so items sharing an Order are neither
// skipped nor repeated across pages. The zero Key is the position before
// the newest item.
type Key struct {
	Order int64
	ID    string
}

// IsZero reports whether k is the zero Key: a first page.
func (k Key) IsZero() bool { return k == Key{} }

// Older reports whether the item at (order, id) is strictly older than k:
// on a page that starts after k. Every item is older than the zero Key.
func (k Key) Older(order int64, id string) bool {
	return k.IsZero() || order < k.Order || order == k.Order && id < k.ID
}

// String encodes k as an opaque token for an API; the zero Key is "".
func (k Key) String() string {
	if k.IsZero() {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.Order, 10) + ":" + k.ID))
}

// Parse decodes a token that String made ("" is the zero Key). Anything
// else is fault.Invalid with the message "invalid cursor".
func Parse(token string) (Key, error) {
	if token == "" {
		return Key{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Key{}, errInvalid()
	}
	order, id, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(order, 10, 64)
	if !ok || err != nil {
		return Key{}, errInvalid()
	}
	k := Key{Order: n, ID: id}
	if k.IsZero() {
		return Key{}, errInvalid()
	}
	return k, nil
}

func errInvalid() error { return fault.New(fault.Invalid, "invalid cursor") }

// Request asks for a page: up to Limit items strictly older than After.
type Request struct {
	// After is where the page starts; zero means the newest item.
	After Key
	// Limit is the most items wanted; see Size.
	Limit int
}

// Size is r.Limit as a store applies it: def if it is 0 or less, and at
// most max.
func (r Request) Size(def, max int) int {
	switch {
	case r.Limit <= 0:
		return def
	case r.Limit > max:
		return max
	}
	return r.Limit
}

// Page is one page of a list, newest first.
type Page[T any] struct {
	// Items are the page's items, newest first; never nil.
	Items []T
	// Next is where the next page starts: the last item's Key (zero when
	// the page is empty).
	Next Key
	// More reports whether older items exist after this page.
	More bool
}

// Of makes a page of at most size items from items, which a store read
// newest first with one more than size, so that More can be told; key
// gives an item's Key.
func Of[T any](items []T, size int, key func(T) Key) Page[T] {
	p := Page[T]{Items: items}
	if len(items) > size {
		p.Items, p.More = items[:size], true
	}
	if p.Items == nil {
		p.Items = []T{}
	}
	if n := len(p.Items); n > 0 {
		p.Next = key(p.Items[n-1])
	}
	return p
}
