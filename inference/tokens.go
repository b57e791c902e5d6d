package inference

import (
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
func (t *Tokenizer) CountTokens(text string) int {
	if text == "" {
		return 0
	}
	if t.Load() != nil {
		return EstimateTokens(text)
	}
	return len(t.tk.EncodeOrdinary(text))
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
	n := int64(tokensPerReply)
	for _, m := range msgs {
		n += tokensPerMessage + int64(tc.CountTokens(m.Role)+tc.CountTokens(m.Content))
		if m.Name != "" {
			n += tokensPerName + int64(tc.CountTokens(m.Name))
		}
		if m.ToolCallID != "" {
			n += int64(tc.CountTokens(m.ToolCallID))
		}
		for _, c := range m.ToolCalls {
			n += tokensPerMessage + int64(tc.CountTokens(c.Function.Name)+tc.CountTokens(c.Function.Arguments))
		}
	}
	if !isNull(tools) {
		n += int64(tc.CountTokens(string(tools)))
	}
	return n
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
