package inference

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

type noNetwork struct{}

func (noNetwork) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("the tokenizer must not use the network")
}

// TestTokenizerIsOffline loads the encoding with the default HTTP transport
// broken: tiktoken-go's own loader would fetch it with http.Get.
func TestTokenizerIsOffline(t *testing.T) {
	saved := http.DefaultTransport
	http.DefaultTransport = noNetwork{}
	defer func() { http.DefaultTransport = saved }()
	t.Setenv("TIKTOKEN_CACHE_DIR", t.TempDir())

	tk := NewTokenizer()
	require.NoError(t, tk.Load())
	require.Equal(t, 2, tk.CountTokens("hello world"))
	require.Equal(t, 0, tk.CountTokens(""))
	require.Equal(t, 1, tk.CountTokens(" the"))
	require.Positive(t, tk.CountTokens("<|endoftext|> is plain text here"))
}

// loaded is one tokenizer for the tests below.
var loaded = sync.OnceValue(func() *Tokenizer {
	tk := NewTokenizer()
	if err := tk.Load(); err != nil {
		panic(err)
	}
	return tk
})

var samples = []string{
	"The quick brown fox jumps over the lazy dog. It's 12345 miles away, isn't it?\n\nNew paragraph: (parenthesised) words...",
	"func main() {\n\tfmt.Println(\"hello, world\") // 42\n\tx := []int{1, 2, 3}\n}\n",
	"東京は日本の首都です。人口は約1400万人です。",
	"Prices: $4.99, €12.50 and 1,000,000 tokens; see https://example.com/a/b?c=d#e.",
	"   leading spaces, trailing spaces   \r\n\r\n  mixed\twhitespace  ",
	"Ünïcödé wörds – with “quotes” and emoji 🙂🙂 too!",
}

// TestPieceCounterStaysBelowTheTokenizer checks the streaming estimate
// against o200k_base, on whole texts and on texts streamed one token per
// chunk, as upstreams stream them.
func TestPieceCounterStaysBelowTheTokenizer(t *testing.T) {
	tk := loaded()
	for _, s := range samples {
		ids := tk.tk.EncodeOrdinary(s)
		var whole pieceCounter
		require.LessOrEqual(t, whole.add(s), int64(len(ids)), "whole %q", s)

		var streamed pieceCounter
		var est int64
		var text strings.Builder
		for _, id := range ids {
			chunk := tk.tk.Decode([]int{id})
			text.WriteString(chunk)
			est += max(streamed.add(chunk), 1)
		}
		require.Equal(t, s, text.String())
		require.LessOrEqual(t, est, int64(len(ids)), "streamed %q", s)
		require.GreaterOrEqual(t, est, int64(len(ids))/2, "a useful estimate, %q", s)
	}
}

func TestPromptUpperBound(t *testing.T) {
	tk := loaded()
	msgs := []Message{{Role: RoleSystem, Content: "be brief"}}
	for _, s := range samples {
		msgs = append(msgs, Message{Role: RoleUser, Content: s})
		require.GreaterOrEqual(t, promptUpperBound(msgs, nil), countPrompt(tk, msgs, nil))
	}
}

// Segmented counting is exact on ordinary text: it cuts only before a
// space that follows a word.
func TestSegmentedCountMatchesWholeText(t *testing.T) {
	tk := loaded()
	words := strings.Fields("The quick brown fox jumps over the lazy dog; numbers 12345 and punctuation (like this) — and ünïcödé, 日本語の文章も。")
	var b strings.Builder
	for i := 0; b.Len() < 64<<10; i++ {
		b.WriteString(words[i%len(words)])
		if i%17 == 16 {
			b.WriteString("\n\n")
		} else {
			b.WriteByte(' ')
		}
	}
	text := b.String()
	require.Equal(t, len(tk.tk.EncodeOrdinary(text)), tk.CountTokens(text))

	// Segments cover the text exactly, and none is much over the target.
	var joined strings.Builder
	segments(text, func(s string) bool {
		require.LessOrEqual(t, len(s), segmentTarget+64)
		joined.WriteString(s)
		return true
	})
	require.Equal(t, text, joined.String())
}

// One huge word, or a huge run of spaces, is counted in bounded pieces:
// linear time, and never fewer tokens than a byte-per-64 bound.
func TestHugeRunsCountInBoundedPieces(t *testing.T) {
	tk := loaded()
	for _, text := range []string{strings.Repeat("a", 2<<20), strings.Repeat(" ", 1<<20), strings.Repeat("ab1!", 256<<10)} {
		n := tk.CountTokens(text)
		require.GreaterOrEqual(t, n, len(text)/maxRun)
		// Stopping early stops early.
		k, err := tk.CountTokensUpTo(t.Context(), text, 1000)
		require.NoError(t, err)
		require.Greater(t, k, 1000)
		require.Less(t, k, 1000+segmentTarget)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := tk.CountTokensUpTo(ctx, strings.Repeat("word ", 1<<20), -1)
	require.ErrorIs(t, err, context.Canceled)
}
