package inference

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file decodes the hot types' JSON without reflection: chat requests,
// upstream answers and upstream stream chunks. Each decoder is a fast path
// for the shapes that occur in practice. It gives up (ok false) on
// anything unusual: a key that matches a field only case-insensitively, a
// duplicate field, a lone surrogate, an unexpected type, a syntax error,
// and so on. The caller then decodes with encoding/json, which decides the
// result and the error. So the fast path never changes what is accepted,
// what it decodes to, or what an error says; the tests check it against
// encoding/json on many inputs.

// maxFastDepth bounds nesting in skipped values; deeper values go to
// encoding/json.
const maxFastDepth = 512

// jsonReader reads JSON from b.
type jsonReader struct {
	b []byte
	i int
}

// ws skips whitespace.
func (r *jsonReader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next byte after whitespace, 0 at the end.
func (r *jsonReader) peek() byte {
	r.ws()
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

// eat consumes c if it is next.
func (r *jsonReader) eat(c byte) bool {
	if r.peek() == c {
		r.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (r *jsonReader) end() bool {
	r.ws()
	return r.i == len(r.b)
}

// literal consumes the literal lit (true, false, null) if it is next.
func (r *jsonReader) literal(lit string) bool {
	if r.peek() == lit[0] && len(r.b)-r.i >= len(lit) && string(r.b[r.i:r.i+len(lit)]) == lit {
		r.i += len(lit)
		return true
	}
	return false
}

// null consumes null if it is next.
func (r *jsonReader) null() bool { return r.literal("null") }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// rawString reads a string token and returns its contents between the
// quotes, whether it has escapes, and whether it has non-ASCII bytes.
// Escapes are checked for syntax; UTF-8 is not checked.
func (r *jsonReader) rawString() (raw []byte, esc, nonASCII, ok bool) {
	if r.peek() != '"' {
		return nil, false, false, false
	}
	b := r.b
	start := r.i + 1
	for i := start; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			r.i = i + 1
			return b[start:i], esc, nonASCII, true
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return nil, false, false, false
			}
			i++
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return nil, false, false, false
				}
				i += 4
			default:
				return nil, false, false, false
			}
		case c < 0x20:
			return nil, false, false, false
		case c >= utf8.RuneSelf:
			nonASCII = true
		}
	}
	return nil, false, false, false
}

// str reads a string as encoding/json decodes it into a Go string. It
// gives up on invalid UTF-8 and lone surrogates, which encoding/json
// replaces.
func (r *jsonReader) str() (string, bool) {
	raw, esc, nonASCII, ok := r.rawString()
	if !ok {
		return "", false
	}
	if !esc {
		if nonASCII && !utf8.Valid(raw) {
			return "", false
		}
		return string(raw), true
	}
	return unescape(raw)
}

func hexVal(b []byte) rune {
	var v rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		default:
			c = c - 'A' + 10
		}
		v = v<<4 | rune(c)
	}
	return v
}

// unescape decodes the contents of a string with escapes (already checked
// for syntax by rawString).
func unescape(raw []byte) (string, bool) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		switch raw[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			rr := hexVal(raw[i+1:])
			i += 4
			switch {
			case 0xD800 <= rr && rr < 0xDC00:
				if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
					return "", false
				}
				lo := hexVal(raw[i+3:])
				if lo < 0xDC00 || lo >= 0xE000 {
					return "", false
				}
				rr = (rr-0xD800)<<10 | (lo - 0xDC00) + 0x10000
				i += 6
			case 0xDC00 <= rr && rr < 0xE000:
				return "", false
			}
			out = utf8.AppendRune(out, rr)
		default: // '"', '\\', '/'
			out = append(out, raw[i])
		}
	}
	if !utf8.Valid(out) {
		return "", false
	}
	return string(out), true
}

// key reads an object key and the colon after it. Keys with escapes or
// non-ASCII bytes give up: encoding/json matches them to fields in ways
// not worth repeating here.
func (r *jsonReader) key() ([]byte, bool) {
	raw, esc, nonASCII, ok := r.rawString()
	if !ok || esc || nonASCII || !r.eat(':') {
		return nil, false
	}
	return raw, true
}

// unknownKey reports whether k is safe to skip: it matches none of the
// known field names, not even case-insensitively.
func unknownKey(k []byte, known ...string) bool {
	for _, n := range known {
		if len(n) == len(k) && strings.EqualFold(string(k), n) {
			return false
		}
	}
	return true
}

// number reads a number token, checking JSON's grammar, and returns its
// text.
func (r *jsonReader) number() ([]byte, bool) {
	r.ws()
	b := r.b
	start, i := r.i, r.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, false
		}
	}
	r.i = i
	return b[start:i], true
}

// int64 reads an integer as encoding/json decodes it into an int64 (or an
// int on 64-bit platforms).
func (r *jsonReader) int64() (int64, bool) {
	lit, ok := r.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	return n, err == nil
}

// uint64 reads an integer as encoding/json decodes it into a uint64.
func (r *jsonReader) uint64() (uint64, bool) {
	lit, ok := r.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(string(lit), 10, 64)
	return n, err == nil
}

// float64 reads a number as encoding/json decodes it into a float64.
func (r *jsonReader) float64() (float64, bool) {
	lit, ok := r.number()
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	return f, err == nil
}

// bool reads true or false.
func (r *jsonReader) bool() (v, ok bool) {
	if r.literal("true") {
		return true, true
	}
	if r.literal("false") {
		return false, true
	}
	return false, false
}

// skip reads any value, checking its syntax.
func (r *jsonReader) skip(depth int) bool {
	if depth > maxFastDepth {
		return false
	}
	switch r.peek() {
	case '"':
		_, _, _, ok := r.rawString()
		return ok
	case '{':
		r.i++
		if r.eat('}') {
			return true
		}
		for {
			if _, _, _, ok := r.rawString(); !ok || !r.eat(':') || !r.skip(depth+1) {
				return false
			}
			if r.eat(',') {
				continue
			}
			return r.eat('}')
		}
	case '[':
		r.i++
		if r.eat(']') {
			return true
		}
		for {
			if !r.skip(depth + 1) {
				return false
			}
			if r.eat(',') {
				continue
			}
			return r.eat(']')
		}
	case 't':
		return r.literal("true")
	case 'f':
		return r.literal("false")
	case 'n':
		return r.literal("null")
	}
	_, ok := r.number()
	return ok
}

// raw reads any value and returns its bytes.
func (r *jsonReader) raw() ([]byte, bool) {
	r.ws()
	start := r.i
	if !r.skip(0) {
		return nil, false
	}
	return r.b[start:r.i], true
}

// object reads an object, calling field for each key with the reader at
// the value; field reads the value and reports whether it could.
func (r *jsonReader) object(field func(k []byte) bool) bool {
	if !r.eat('{') {
		return false
	}
	if r.eat('}') {
		return true
	}
	for {
		k, ok := r.key()
		if !ok || !field(k) {
			return false
		}
		if r.eat(',') {
			continue
		}
		return r.eat('}')
	}
}

// array reads an array, calling elem for each element.
func (r *jsonReader) array(elem func() bool) bool {
	if !r.eat('[') {
		return false
	}
	if r.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if r.eat(',') {
			continue
		}
		return r.eat(']')
	}
}

// optStr reads a string or null (which leaves *dst unchanged), as
// encoding/json decodes into a string field.
func (r *jsonReader) optStr(dst *string) bool {
	if r.null() {
		return true
	}
	s, ok := r.str()
	*dst = s
	return ok
}

// seen tracks the fields of an object already read: a duplicate gives up.
type seen uint64

func (s *seen) first(bit uint) bool {
	if *s&(1<<bit) != 0 {
		return false
	}
	*s |= 1 << bit
	return true
}

// validRaw reports whether raw is one valid JSON value, as json.Valid.
func validRaw(raw []byte) bool {
	r := jsonReader{b: raw}
	if r.skip(0) && r.end() {
		return true
	}
	return json.Valid(raw)
}

// chatRequestKeys are ChatRequest's JSON names.
var chatRequestKeys = []string{"model", "messages", "stream", "temperature", "top_p", "max_tokens",
	"max_completion_tokens", "frequency_penalty", "presence_penalty", "top_k", "stop", "seed", "n",
	"tools", "tool_choice", "response_format", "stream_options", "user"}

// parseChatRequestFast decodes body as json.Unmarshal would into a
// ChatRequest, or gives up.
func parseChatRequestFast(body []byte) (*ChatRequest, bool) {
	r := &jsonReader{b: body}
	req := new(ChatRequest)
	var s seen
	float := func(dst **float64) bool {
		if r.null() {
			*dst = nil
			return true
		}
		f, ok := r.float64()
		if ok {
			*dst = &f
		}
		return ok
	}
	raw := func(dst *json.RawMessage) bool {
		v, ok := r.raw()
		if ok {
			*dst = append(json.RawMessage(nil), v...)
		}
		return ok
	}
	ok := r.object(func(k []byte) bool {
		switch string(k) {
		case "model":
			return s.first(0) && r.optStr(&req.Model)
		case "messages":
			return s.first(1) && r.messages(&req.Messages)
		case "stream":
			if !s.first(2) {
				return false
			}
			if r.null() {
				return true
			}
			var ok bool
			req.Stream, ok = r.bool()
			return ok
		case "temperature":
			return s.first(3) && float(&req.Temperature)
		case "top_p":
			return s.first(4) && float(&req.TopP)
		case "max_tokens", "max_completion_tokens":
			dst, bit := &req.MaxTokens, uint(5)
			if k[4] == 'c' {
				dst, bit = &req.MaxCompletionTokens, 6
			}
			if !s.first(bit) {
				return false
			}
			if r.null() {
				return true
			}
			var ok bool
			*dst, ok = r.uint64()
			return ok
		case "frequency_penalty":
			return s.first(7) && float(&req.FrequencyPenalty)
		case "presence_penalty":
			return s.first(8) && float(&req.PresencePenalty)
		case "top_k":
			return s.first(9) && raw(&req.TopK)
		case "stop":
			return s.first(10) && raw(&req.Stop)
		case "seed":
			return s.first(11) && raw(&req.Seed)
		case "n":
			return s.first(12) && raw(&req.N)
		case "tools":
			return s.first(13) && raw(&req.Tools)
		case "tool_choice":
			return s.first(14) && raw(&req.ToolChoice)
		case "response_format":
			return s.first(15) && raw(&req.ResponseFormat)
		case "stream_options":
			if !s.first(16) {
				return false
			}
			if r.null() {
				req.StreamOptions = nil
				return true
			}
			so := new(StreamOptions)
			req.StreamOptions = so
			var ss seen
			return r.object(func(k []byte) bool {
				if string(k) == "include_usage" {
					if !ss.first(0) {
						return false
					}
					if r.null() {
						return true
					}
					var ok bool
					so.IncludeUsage, ok = r.bool()
					return ok
				}
				return unknownKey(k, "include_usage") && r.skip(0)
			})
		case "user":
			return s.first(17) && r.optStr(&req.User)
		}
		return unknownKey(k, chatRequestKeys...) && r.skip(0)
	})
	if !ok || !r.end() {
		return nil, false
	}
	return req, true
}

// messages reads a messages array.
func (r *jsonReader) messages(dst *[]Message) bool {
	if r.null() {
		*dst = nil
		return true
	}
	msgs := make([]Message, 0, 4)
	ok := r.array(func() bool {
		msgs = append(msgs, Message{})
		return r.message(&msgs[len(msgs)-1])
	})
	*dst = msgs
	return ok
}

var messageKeys = []string{"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content"}

// message reads one message as [Message.UnmarshalJSON] does.
func (r *jsonReader) message(m *Message) bool {
	var s seen
	return r.object(func(k []byte) bool {
		switch string(k) {
		case "role":
			return s.first(0) && r.optStr(&m.Role)
		case "content":
			if !s.first(1) {
				return false
			}
			switch r.peek() {
			case 'n':
				return r.null()
			case '"':
				return r.optStr(&m.Content)
			case '[':
				parts := make([]ContentPart, 0, 2)
				ok := r.array(func() bool {
					parts = append(parts, ContentPart{})
					p := &parts[len(parts)-1]
					var ps seen
					return r.object(func(k []byte) bool {
						switch string(k) {
						case "type":
							return ps.first(0) && r.optStr(&p.Type)
						case "text":
							return ps.first(1) && r.optStr(&p.Text)
						}
						return unknownKey(k, "type", "text") && r.skip(0)
					})
				})
				if !ok {
					return false
				}
				m.Parts = parts
				if len(parts) == 1 {
					m.Content = parts[0].Text
				} else {
					texts := make([]string, len(parts))
					for i, p := range parts {
						texts[i] = p.Text
					}
					m.Content = strings.Join(texts, "\n")
				}
				return true
			}
			return false
		case "name":
			return s.first(2) && r.optStr(&m.Name)
		case "tool_calls":
			return s.first(3) && r.toolCalls(&m.ToolCalls)
		case "tool_call_id":
			return s.first(4) && r.optStr(&m.ToolCallID)
		case "reasoning_content":
			return s.first(5) && r.optStr(&m.ReasoningContent)
		}
		return unknownKey(k, messageKeys...) && r.skip(0)
	})
}

// toolCalls reads a message's tool calls as encoding/json reads them into
// []ToolCall (an upstream's "index" is skipped).
func (r *jsonReader) toolCalls(dst *[]ToolCall) bool {
	if r.null() {
		*dst = nil
		return true
	}
	tcs := make([]ToolCall, 0, 1)
	ok := r.array(func() bool {
		tcs = append(tcs, ToolCall{})
		tc := &tcs[len(tcs)-1]
		var s seen
		return r.object(func(k []byte) bool {
			switch string(k) {
			case "id":
				return s.first(0) && r.optStr(&tc.ID)
			case "type":
				return s.first(1) && r.optStr(&tc.Type)
			case "function":
				if !s.first(2) {
					return false
				}
				if r.null() {
					return true
				}
				return r.function(&tc.Function.Name, &tc.Function.Arguments)
			}
			return unknownKey(k, "id", "type", "function") && r.skip(0)
		})
	})
	*dst = tcs
	return ok
}

// function reads {"name": ..., "arguments": ...}.
func (r *jsonReader) function(name, args *string) bool {
	var s seen
	return r.object(func(k []byte) bool {
		switch string(k) {
		case "name":
			return s.first(0) && r.optStr(name)
		case "arguments":
			return s.first(1) && r.optStr(args)
		}
		return unknownKey(k, "name", "arguments") && r.skip(0)
	})
}

// decodeUpstreamFast decodes an upstream's non-streamed answer as
// decodeUpstream does, or gives up (on array content, repeated or
// case-folded keys, numbers that are not integers...). Fields the gateway
// does not use are skipped, as encoding/json skips them.
func decodeUpstreamFast(body []byte) (*ChatResponse, bool) {
	r := &jsonReader{b: body}
	out := &ChatResponse{Object: ObjectCompletion}
	var s seen
	ok := r.object(func(k []byte) bool {
		switch string(k) {
		case "id":
			return s.first(0) && r.optStr(&out.ID)
		case "created":
			if !s.first(1) {
				return false
			}
			if r.null() {
				return true
			}
			var ok bool
			out.Created, ok = r.int64()
			return ok
		case "model":
			return s.first(2) && r.optStr(&out.Model)
		case "choices":
			if !s.first(3) {
				return false
			}
			if r.null() {
				return true
			}
			out.Choices = make([]Choice, 0, 1)
			return r.array(func() bool {
				out.Choices = append(out.Choices, Choice{})
				return r.upstreamChoice(&out.Choices[len(out.Choices)-1])
			})
		case "usage":
			if !s.first(4) {
				return false
			}
			if r.null() {
				return true
			}
			var us seen
			return r.object(func(k []byte) bool {
				var dst *int64
				var bit uint
				switch string(k) {
				case "prompt_tokens":
					dst, bit = &out.Usage.PromptTokens, 0
				case "completion_tokens":
					dst, bit = &out.Usage.CompletionTokens, 1
				case "total_tokens":
					dst, bit = &out.Usage.TotalTokens, 2
				default:
					return unknownKey(k, "prompt_tokens", "completion_tokens", "total_tokens") && r.skip(0)
				}
				if !us.first(bit) {
					return false
				}
				if r.null() {
					return true
				}
				n, ok := r.int64()
				*dst = n
				return ok
			})
		}
		return unknownKey(k, "id", "created", "model", "choices", "usage") && r.skip(0)
	})
	if !ok || !r.end() {
		return nil, false
	}
	if out.Choices == nil {
		out.Choices = make([]Choice, 0) // as decodeUpstream makes it
	}
	return out, true
}

// upstreamChoice reads one choice of an upstream answer.
func (r *jsonReader) upstreamChoice(c *Choice) bool {
	var s seen
	ok := r.object(func(k []byte) bool {
		switch string(k) {
		case "index":
			if !s.first(0) {
				return false
			}
			if r.null() {
				return true
			}
			n, ok := r.int64()
			if n != int64(int32(n)) {
				return false
			}
			c.Index = int(n)
			return ok
		case "message":
			if !s.first(1) {
				return false
			}
			if r.null() {
				return true
			}
			return r.upstreamMessage(&c.Message)
		case "finish_reason":
			return s.first(2) && r.optStr(&c.FinishReason)
		}
		return unknownKey(k, "index", "message", "finish_reason") && r.skip(0)
	})
	if c.FinishReason == "" {
		c.FinishReason = FinishStop
	}
	return ok
}

// upstreamMessage reads an upstream answer's message when its content is
// a string or null (array content gives up).
func (r *jsonReader) upstreamMessage(m *Message) bool {
	var s seen
	return r.object(func(k []byte) bool {
		switch string(k) {
		case "role":
			return s.first(0) && r.optStr(&m.Role)
		case "content":
			return s.first(1) && r.peek() != '[' && r.optStr(&m.Content)
		case "name":
			return s.first(2) && r.optStr(&m.Name)
		case "reasoning_content":
			return s.first(3) && r.optStr(&m.ReasoningContent)
		case "tool_calls":
			if !s.first(4) || !r.toolCalls(&m.ToolCalls) {
				return false
			}
			if len(m.ToolCalls) == 0 {
				m.ToolCalls = nil // as decodeUpstream converts
			}
			return true
		case "tool_call_id":
			return s.first(5) && r.optStr(&m.ToolCallID)
		}
		return unknownKey(k, "role", "content", "name", "reasoning_content",
			"tool_calls", "tool_call_id") && r.skip(0)
	})
}

// decodeChunkFast decodes a stream event's data as json.Unmarshal would
// into a ChatChunk, or gives up.
func decodeChunkFast(data []byte) (*ChatChunk, bool) {
	r := &jsonReader{b: data}
	c := new(ChatChunk)
	var s seen
	ok := r.object(func(k []byte) bool {
		switch string(k) {
		case "id":
			return s.first(0) && r.optStr(&c.ID)
		case "object":
			return s.first(1) && r.optStr(&c.Object)
		case "created":
			if !s.first(2) {
				return false
			}
			if r.null() {
				return true
			}
			var ok bool
			c.Created, ok = r.int64()
			return ok
		case "model":
			return s.first(3) && r.optStr(&c.Model)
		case "choices":
			if !s.first(4) {
				return false
			}
			if r.null() {
				c.Choices = nil
				return true
			}
			c.Choices = make([]ChunkChoice, 0, 1)
			return r.array(func() bool {
				c.Choices = append(c.Choices, ChunkChoice{})
				return r.chunkChoice(&c.Choices[len(c.Choices)-1])
			})
		case "usage":
			if !s.first(5) {
				return false
			}
			if r.null() {
				c.Usage = nil
				return true
			}
			u := new(Usage)
			c.Usage = u
			var us seen
			return r.object(func(k []byte) bool {
				var dst *int64
				var bit uint
				switch string(k) {
				case "prompt_tokens":
					dst, bit = &u.PromptTokens, 0
				case "completion_tokens":
					dst, bit = &u.CompletionTokens, 1
				case "total_tokens":
					dst, bit = &u.TotalTokens, 2
				default:
					return unknownKey(k, "prompt_tokens", "completion_tokens", "total_tokens") && r.skip(0)
				}
				if !us.first(bit) {
					return false
				}
				if r.null() {
					return true
				}
				n, ok := r.int64()
				*dst = n
				return ok
			})
		}
		return unknownKey(k, "id", "object", "created", "model", "choices", "usage") && r.skip(0)
	})
	if !ok || !r.end() {
		return nil, false
	}
	return c, true
}

// chunkChoice reads one choice of a chunk.
func (r *jsonReader) chunkChoice(ch *ChunkChoice) bool {
	var s seen
	return r.object(func(k []byte) bool {
		switch string(k) {
		case "index":
			if !s.first(0) {
				return false
			}
			if r.null() {
				return true
			}
			n, ok := r.int64()
			ch.Index = int(n)
			return ok
		case "delta":
			if !s.first(1) {
				return false
			}
			if r.null() {
				return true
			}
			return r.delta(&ch.Delta)
		case "finish_reason":
			if !s.first(2) {
				return false
			}
			if r.null() {
				ch.FinishReason = nil
				return true
			}
			fr, ok := r.str()
			ch.FinishReason = &fr
			return ok
		}
		return unknownKey(k, "index", "delta", "finish_reason") && r.skip(0)
	})
}

// delta reads a chunk's delta.
func (r *jsonReader) delta(d *Delta) bool {
	var s seen
	return r.object(func(k []byte) bool {
		switch string(k) {
		case "role":
			return s.first(0) && r.optStr(&d.Role)
		case "content":
			return s.first(1) && r.optStr(&d.Content)
		case "reasoning_content":
			return s.first(2) && r.optStr(&d.ReasoningContent)
		case "tool_calls":
			if !s.first(3) {
				return false
			}
			if r.null() {
				d.ToolCalls = nil
				return true
			}
			d.ToolCalls = make([]ToolCallDelta, 0, 1)
			return r.array(func() bool {
				d.ToolCalls = append(d.ToolCalls, ToolCallDelta{})
				tc := &d.ToolCalls[len(d.ToolCalls)-1]
				var ts seen
				return r.object(func(k []byte) bool {
					switch string(k) {
					case "index":
						if !ts.first(0) {
							return false
						}
						if r.null() {
							return true
						}
						n, ok := r.int64()
						tc.Index = int(n)
						return ok
					case "id":
						return ts.first(1) && r.optStr(&tc.ID)
					case "type":
						return ts.first(2) && r.optStr(&tc.Type)
					case "function":
						if !ts.first(3) {
							return false
						}
						if r.null() {
							return true
						}
						return r.function(&tc.Function.Name, &tc.Function.Arguments)
					}
					return unknownKey(k, "index", "id", "type", "function") && r.skip(0)
				})
			})
		}
		return unknownKey(k, "role", "content", "reasoning_content", "tool_calls") && r.skip(0)
	})
}
