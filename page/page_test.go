package page_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

func TestKeyToken(t *testing.T) {
	for _, k := range []page.Key{{Order: 1748000000123456, ID: "01a2-x"}, {Order: -5, ID: ""}, {Order: 7, ID: "a:b:c"}} {
		got, err := page.Parse(k.String())
		require.NoError(t, err)
		require.Equal(t, k, got)
	}
	zero, err := page.Parse("")
	require.NoError(t, err)
	require.True(t, zero.IsZero())
	require.Empty(t, page.Key{}.String())
	for _, bad := range []string{"!!", "bm9jb2xvbg", "eDox", "MDo"} { // not base64; "nocolon"; "x:1"; "0:"
		_, err := page.Parse(bad)
		require.ErrorIs(t, err, fault.Invalid, bad)
		require.Equal(t, "invalid cursor", fault.MessageOf(err))
	}
}

func TestOlderBreaksTiesByID(t *testing.T) {
	k := page.Key{Order: 10, ID: "m"}
	require.True(t, k.Older(9, "z"))
	require.True(t, k.Older(10, "a"))
	require.False(t, k.Older(10, "m"), "strictly older")
	require.False(t, k.Older(10, "n"))
	require.False(t, k.Older(11, "a"))
	require.True(t, page.Key{}.Older(1<<62, "z"), "a first page takes everything")
}

func TestOf(t *testing.T) {
	key := func(n int) page.Key { return page.Key{Order: int64(n)} }
	p := page.Of([]int{9, 8, 7}, 2, key)
	require.Equal(t, page.Page[int]{Items: []int{9, 8}, Next: page.Key{Order: 8}, More: true}, p)
	p = page.Of([]int{9, 8}, 2, key)
	require.Equal(t, page.Page[int]{Items: []int{9, 8}, Next: page.Key{Order: 8}}, p)
	p = page.Of[int](nil, 2, key)
	require.NotNil(t, p.Items)
	require.False(t, p.More)
	require.Equal(t, 50, page.Request{}.Size(50, 100))
	require.Equal(t, 100, page.Request{Limit: 500}.Size(50, 100))
	require.Equal(t, 7, page.Request{Limit: 7}.Size(50, 100))
}
