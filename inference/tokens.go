package inference

import (
	"context"
	"encoding/json"
	"sync"
	"unicode"
	"unicode/utf8"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

// TokenCounter counts the tokens of a text.
type TokenCounter interface {
	CountTokens(text string) int
}

// BoundedCounter is a [TokenCounter] that can stop early: the [Service]
// uses it, when a counter has it, to stop counting a prompt once it is
// known to be over the model's context, or once the caller has gone.
type BoundedCounter interface {
	TokenCounter
	// CountTokensUpTo counts text's tokens, or stops at some count above
	// limit (and returns it). It returns ctx's error if ctx ends first.
	CountTokensUpTo(ctx context.Context, text string, limit int) (int, error)
}

// Tokenizer counts tokens with OpenAI's o200k_base encoding, read from the
// BPE file embedded in github.com/pkoukk/tiktoken-go-loader: it never
// touches the network or the disk. It is built per instance with
// tiktoken.NewCoreBPE, so tiktoken-go's package-level loader setting and
// encoding cache are never used.
//
// Loading takes about half a second and some 25 MB; it happens on first
// use, or in [Tokenizer.Load]. Counting runs at about 1.5 MB/s, which is
// why the [Service] counts only when a cheap bound is not enough (see the
// package documentation). It is safe for concurrent use.
type Tokenizer struct {
	once sync.Once
	tk   *tiktoken.Tiktoken
	err  error
}

// NewTokenizer returns an o200k_base tokenizer that loads on first use.
func NewTokenizer() *Tokenizer { return &Tokenizer{} }

// o200kPattern is tiktoken's o200k_base pre-tokenization pattern, as
// tiktoken-go v0.1.8 defines it (it does not export it).
const o200kPattern = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?` +
	`|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?` +
	`|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// Load reads the encoding now instead of on first use.
func (t *Tokenizer) Load() error {
	t.once.Do(func() {
		ranks, err := tiktokenloader.NewOfflineLoader().LoadTiktokenBpe("o200k_base.tiktoken")
		if err != nil {
			t.err = err
			return
		}
		special := map[string]int{"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
		bpe, err := tiktoken.NewCoreBPE(ranks, special, o200kPattern)
		if err != nil {
			t.err = err
			return
		}
		enc := &tiktoken.Encoding{Name: "o200k_base", PatStr: o200kPattern, MergeableRanks: ranks, SpecialTokens: special}
		t.tk = tiktoken.NewTiktoken(bpe, enc, map[string]any{})
	})
	return t.err
}

// CountTokens counts text's tokens; special-token markup in text counts as
// ordinary text. If the encoding cannot load (it is embedded, so it should
// not happen) it falls back to [EstimateTokens].
//
// Its time and memory are linear in the text's length: the text is
// encoded in segments of about 4 KiB cut at word boundaries, and a run of
// more than 64 bytes without a change between space and non-space (one
// huge "word", or a huge run of spaces) is cut into 64-byte pieces. BPE
// merging is quadratic in a piece's length, so without that cut a single
// 10 MB word would take hours; with it, such a run counts somewhat more
// tokens than whole-word merging would (about one per 64 bytes more), and
// ordinary text counts exactly as before.
func (t *Tokenizer) CountTokens(text string) int {
	n, _ := t.CountTokensUpTo(context.Background(), text, -1)
	return n
}

// CountTokensUpTo is [Tokenizer.CountTokens] that stops once the count
// passes limit (a negative limit: never), or when ctx ends.
func (t *Tokenizer) CountTokensUpTo(ctx context.Context, text string, limit int) (int, error) {
	if text == "" {
		return 0, nil
	}
	if t.Load() != nil {
		return EstimateTokens(text), nil
	}
	n, k := 0, 0
	var err error
	segments(text, func(seg string) bool {
		n += len(t.tk.EncodeOrdinary(seg))
		if limit >= 0 && n > limit {
			return false
		}
		if k++; k%16 == 0 && ctx.Err() != nil {
			err = ctx.Err()
			return false
		}
		return true
	})
	return n, err
}

// Segmenting bounds (see [Tokenizer.CountTokens]).
const (
	segmentTarget = 4 << 10 // a segment ends at the next word after this many bytes
	maxRun        = 64      // the longest run of one kind kept whole
)

// segments cuts text into pieces that are encoded independently: at the
// first space that follows a word once the piece holds segmentTarget
// bytes (cutting before the space keeps " word" whole, as o200k's
// pre-tokenizer sees it), and inside any run of spaces or of non-spaces
// longer than maxRun. It stops when yield returns false.
func segments(text string, yield func(string) bool) {
	start, runStart := 0, 0
	prevSpace := false
	for i, r := range text {
		sp := r == ' ' || r == '\n' || r == '\t' || r == '\r' || (r >= utf8.RuneSelf && unicode.IsSpace(r))
		if i > start {
			switch {
			case sp != prevSpace:
				if sp && i-start >= segmentTarget {
					if !yield(text[start:i]) {
						return
					}
					start = i
				}
				runStart = i
			case i-runStart >= maxRun:
				if !yield(text[start:i]) {
					return
				}
				start, runStart = i, i
			}
		}
		prevSpace = sp
	}
	if start < len(text) {
		yield(text[start:])
	}
}

// EstimateTokens is a conservative estimate without a tokenizer:
// ceil(bytes/3). English averages about four bytes per token in modern
// tokenizers, so this errs high.
func EstimateTokens(text string) int { return (len(text) + 2) / 3 }

// Estimator is a [TokenCounter] using [EstimateTokens].
type Estimator struct{}

// CountTokens returns [EstimateTokens](text).
func (Estimator) CountTokens(text string) int { return EstimateTokens(text) }

// Chat-format overheads, as OpenAI documents them for its models: every
// message costs 3 tokens beyond its text, a name 1 more, and the reply is
// primed with 3.
const (
	tokensPerMessage = 3
	tokensPerName    = 1
	tokensPerReply   = 3
)

// countPrompt counts the prompt tokens of msgs and tools with tc.
func countPrompt(tc TokenCounter, msgs []Message, tools json.RawMessage) int64 {
	n, _ := countPromptUpTo(context.Background(), tc, msgs, tools, -1)
	return n
}

// countPromptUpTo is countPrompt that stops once the count passes limit
// (negative: never), returning a count above it; when tc is a
// [BoundedCounter] it also stops inside a text, and when ctx ends.
func countPromptUpTo(ctx context.Context, tc TokenCounter, msgs []Message, tools json.RawMessage, limit int64) (int64, error) {
	n := int64(tokensPerReply)
	bc, bounded := tc.(BoundedCounter)
	var err error
	count := func(text string) bool {
		switch {
		case text == "":
		case bounded:
			left := -1
			if limit >= 0 {
				left = int(max(limit-n, 0))
			}
			var k int
			k, err = bc.CountTokensUpTo(ctx, text, left)
			n += int64(k)
		default:
			n += int64(tc.CountTokens(text))
		}
		return err == nil && (limit < 0 || n <= limit)
	}
	for _, m := range msgs {
		n += tokensPerMessage
		if !count(m.Role) || !count(m.Content) {
			return n, err
		}
		if m.Name != "" {
			n += tokensPerName
			if !count(m.Name) {
				return n, err
			}
		}
		if !count(m.ToolCallID) {
			return n, err
		}
		for _, c := range m.ToolCalls {
			n += tokensPerMessage
			if !count(c.Function.Name) || !count(c.Function.Arguments) {
				return n, err
			}
		}
	}
	if !isNull(tools) {
		count(string(tools))
	}
	return n, err
}

// Bounds of the byte-based upper bound: a byte-level BPE token covers at
// least one byte, and chat templates add a handful of tokens per message
// (and instructions when tools are declared).
const (
	boundPerMessage = 8
	boundPerRequest = 16
	boundTools      = 256
)

// promptUpperBound bounds the prompt tokens from above without a tokenizer:
// one token per byte plus template overhead.
func promptUpperBound(msgs []Message, tools json.RawMessage) int64 {
	n := int64(boundPerRequest)
	for _, m := range msgs {
		n += boundPerMessage + int64(len(m.Role)+len(m.Content)+len(m.Name)+len(m.ToolCallID))
		for _, c := range m.ToolCalls {
			n += boundPerMessage + int64(len(c.Function.Name)+len(c.Function.Arguments))
		}
	}
	if !isNull(tools) {
		n += boundTools + int64(len(tools))
	}
	return n
}

// charClass classifies runes the way o200k-like pre-tokenizers split text.
type charClass uint8

const (
	classNone charClass = iota
	classLetter
	classDigit
	classSpace   // whitespace other than line breaks
	classNewline // runs of whitespace holding a line break
	classPunct   // anything else
)

func classOf(r rune) charClass {
	switch {
	case r == '\n' || r == '\r':
		return classNewline
	case unicode.IsLetter(r) || unicode.IsMark(r):
		return classLetter
	case unicode.IsNumber(r):
		return classDigit
	case unicode.IsSpace(r):
		return classSpace
	}
	return classPunct
}

// pieceCounter estimates output tokens cheaply as a stream arrives. It
// counts the pieces an o200k-like pre-tokenizer cuts text into (a word with
// one leading space or punctuation mark, groups of up to three digits,
// runs of punctuation, runs of whitespace); a tokenizer never merges
// pieces, so this stays at or below the real count for ordinary text,
// which is what a cut-off must use to never stop a stream that stays
// within its budget. It remembers the end of the previous text, so a word
// split across chunks counts once.
type pieceCounter struct {
	prev   charClass
	run    int // length of the current run of prev's class
	pieces int64
}

// add counts the pieces s starts and returns their number.
func (p *pieceCounter) add(s string) int64 {
	var n int64
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		c := classOf(r)
		if (r == '\'' || r == '’') && p.prev == classLetter {
			c = classLetter // contractions: "it's", "isn't"
		}
		if c == classSpace && p.prev == classNewline {
			c = classNewline
		}
		if c == classNewline && p.prev == classSpace {
			p.prev = classNewline // the run becomes a line-break run
		}
		same := c == p.prev
		switch {
		case same && c == classDigit:
			p.run++
			if p.run%3 == 1 {
				n++
			}
			continue
		case same:
			p.run++
			continue
		case c == classLetter && (p.prev == classSpace || p.prev == classPunct) && p.run == 1:
			// " word", "(word": the lone mark joins the word.
		case c == classPunct && p.prev == classSpace && p.run == 1:
			// " ...": a lone space joins the punctuation.
		case c == classNewline && p.prev == classPunct:
			// ".\n": line breaks end a run of punctuation.
		default:
			n++
		}
		p.prev, p.run = c, 1
	}
	p.pieces += n
	return n
}
