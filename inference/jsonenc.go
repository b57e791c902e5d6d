package inference

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// This file writes the hot types' JSON by hand: the upstream request body,
// responses and stream chunks. encoding/json spends most of its time on
// reflection and on re-scanning what MarshalJSON methods return; these
// appenders write the same bytes as json.Marshal (HTML-safe string
// escaping, its float format, compacted raw values), which the tests check
// byte for byte.

// errRawInvalid reports a json.RawMessage that is not valid JSON; callers
// fall back to encoding/json, which reports the error its own way.
var errRawInvalid = errors.New("inference: invalid raw JSON value")

const hexDigits = "0123456789abcdef"

// htmlSafe[b] is true for the ASCII bytes encoding/json (with HTML
// escaping, as json.Marshal does) writes unchanged inside a string.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		switch b {
		case '"', '\\', '<', '>', '&':
		default:
			t[b] = true
		}
	}
	return t
}()

// appendJSONString appends s as a JSON string exactly as json.Marshal
// writes it: <, > and & as \u003c, \u003e, \u0026, control characters
// escaped, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if htmlSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONFloat appends f as encoding/json writes a float64 (ES6 number
// formatting). NaN and infinities are errors, as in encoding/json.
func appendJSONFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return dst, errRawInvalid
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst, nil
}

// appendRawJSON appends a json.RawMessage as encoding/json does when it
// marshals one: compacted, with <, >, &, U+2028 and U+2029 inside strings
// escaped. An invalid value is errRawInvalid.
func appendRawJSON(dst []byte, raw json.RawMessage) ([]byte, error) {
	if !validRaw(raw) {
		return dst, errRawInvalid
	}
	start := 0
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !inString {
			switch c {
			case ' ', '\t', '\n', '\r':
				dst = append(dst, raw[start:i]...)
				start = i + 1
			case '"':
				inString = true
			}
			continue
		}
		switch {
		case c == '\\':
			i++ // the escaped byte is never special here
		case c == '"':
			inString = false
		case c == '<' || c == '>' || c == '&':
			dst = append(dst, raw[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			start = i + 1
		case c == 0xE2 && i+2 < len(raw) && raw[i+1] == 0x80 && raw[i+2]&^1 == 0xA8:
			dst = append(dst, raw[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[raw[i+2]&0xF])
			start = i + 3
			i += 2
		}
	}
	return append(dst, raw[start:]...), nil
}

// appendToolCalls appends an assistant message's tool calls.
func appendToolCalls(dst []byte, tcs []ToolCall) []byte {
	dst = append(dst, '[')
	for i := range tcs {
		tc := &tcs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":`...)
		dst = appendJSONString(dst, tc.ID)
		dst = append(dst, `,"type":`...)
		dst = appendJSONString(dst, tc.Type)
		dst = append(dst, `,"function":{"name":`...)
		dst = appendJSONString(dst, tc.Function.Name)
		dst = append(dst, `,"arguments":`...)
		dst = appendJSONString(dst, tc.Function.Arguments)
		dst = append(dst, "}}"...)
	}
	return append(dst, ']')
}

// appendMessage appends m as [Message.MarshalJSON] writes it.
func appendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, `{"role":`...)
	dst = appendJSONString(dst, m.Role)
	dst = append(dst, `,"content":`...)
	switch {
	case m.Parts != nil:
		dst = append(dst, '[')
		for i := range m.Parts {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"type":`...)
			dst = appendJSONString(dst, m.Parts[i].Type)
			dst = append(dst, `,"text":`...)
			dst = appendJSONString(dst, m.Parts[i].Text)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	case m.Content == "" && len(m.ToolCalls) > 0:
		dst = append(dst, "null"...)
	default:
		dst = appendJSONString(dst, m.Content)
	}
	if m.Name != "" {
		dst = append(dst, `,"name":`...)
		dst = appendJSONString(dst, m.Name)
	}
	if len(m.ToolCalls) > 0 {
		dst = append(dst, `,"tool_calls":`...)
		dst = appendToolCalls(dst, m.ToolCalls)
	}
	if m.ToolCallID != "" {
		dst = append(dst, `,"tool_call_id":`...)
		dst = appendJSONString(dst, m.ToolCallID)
	}
	if m.ReasoningContent != "" {
		dst = append(dst, `,"reasoning_content":`...)
		dst = appendJSONString(dst, m.ReasoningContent)
	}
	return append(dst, '}')
}

// appendOptFloat appends ,"name":f when f is set.
func appendOptFloat(dst []byte, name string, f *float64) ([]byte, error) {
	if f == nil {
		return dst, nil
	}
	dst = append(dst, name...)
	return appendJSONFloat(dst, *f)
}

// appendOptRaw appends ,"name":raw when raw is not empty.
func appendOptRaw(dst []byte, name string, raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 {
		return dst, nil
	}
	dst = append(dst, name...)
	return appendRawJSON(dst, raw)
}

// appendRequest appends r's JSON to dst: the same bytes as
// json.Marshal(r). It fails only as json.Marshal would (a NaN or infinite
// float, an invalid raw field), with json.Marshal's error.
func appendRequest(dst []byte, r *ChatRequest) ([]byte, error) {
	start := len(dst)
	dst, err := appendRequestFast(dst, r)
	if err != nil {
		// Let encoding/json describe the problem.
		b, jerr := json.Marshal(r)
		if jerr != nil {
			return dst[:start], jerr
		}
		return append(dst[:start], b...), nil
	}
	return dst, nil
}

func appendRequestFast(dst []byte, r *ChatRequest) (_ []byte, err error) {
	dst = append(dst, `{"model":`...)
	dst = appendJSONString(dst, r.Model)
	dst = append(dst, `,"messages":`...)
	if r.Messages == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range r.Messages {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendMessage(dst, &r.Messages[i])
		}
		dst = append(dst, ']')
	}
	if r.Stream {
		dst = append(dst, `,"stream":true`...)
	}
	if dst, err = appendOptFloat(dst, `,"temperature":`, r.Temperature); err != nil {
		return dst, err
	}
	if dst, err = appendOptFloat(dst, `,"top_p":`, r.TopP); err != nil {
		return dst, err
	}
	if r.MaxTokens != 0 {
		dst = append(dst, `,"max_tokens":`...)
		dst = strconv.AppendUint(dst, r.MaxTokens, 10)
	}
	if r.MaxCompletionTokens != 0 {
		dst = append(dst, `,"max_completion_tokens":`...)
		dst = strconv.AppendUint(dst, r.MaxCompletionTokens, 10)
	}
	if dst, err = appendOptFloat(dst, `,"frequency_penalty":`, r.FrequencyPenalty); err != nil {
		return dst, err
	}
	if dst, err = appendOptFloat(dst, `,"presence_penalty":`, r.PresencePenalty); err != nil {
		return dst, err
	}
	for _, f := range [...]struct {
		name string
		raw  json.RawMessage
	}{
		{`,"top_k":`, r.TopK},
		{`,"stop":`, r.Stop},
		{`,"seed":`, r.Seed},
		{`,"n":`, r.N},
		{`,"tools":`, r.Tools},
		{`,"tool_choice":`, r.ToolChoice},
		{`,"response_format":`, r.ResponseFormat},
	} {
		if dst, err = appendOptRaw(dst, f.name, f.raw); err != nil {
			return dst, err
		}
	}
	if r.StreamOptions != nil {
		if r.StreamOptions.IncludeUsage {
			dst = append(dst, `,"stream_options":{"include_usage":true}`...)
		} else {
			dst = append(dst, `,"stream_options":{"include_usage":false}`...)
		}
	}
	if r.User != "" {
		dst = append(dst, `,"user":`...)
		dst = appendJSONString(dst, r.User)
	}
	return append(dst, '}'), nil
}

// appendUsage appends a usage object.
func appendUsage(dst []byte, u *Usage) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, u.PromptTokens, 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, u.CompletionTokens, 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, u.TotalTokens, 10)
	return append(dst, '}')
}

// appendHead appends the fields every response and chunk starts with.
func appendHead(dst []byte, id, object string, created int64, model string) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, id)
	dst = append(dst, `,"object":`...)
	dst = appendJSONString(dst, object)
	dst = append(dst, `,"created":`...)
	dst = strconv.AppendInt(dst, created, 10)
	dst = append(dst, `,"model":`...)
	dst = appendJSONString(dst, model)
	return append(dst, `,"choices":`...)
}

// AppendJSON appends r's JSON to dst: the same bytes as json.Marshal(r).
func (r *ChatResponse) AppendJSON(dst []byte) []byte {
	dst = appendHead(dst, r.ID, r.Object, r.Created, r.Model)
	if r.Choices == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range r.Choices {
			c := &r.Choices[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"index":`...)
			dst = strconv.AppendInt(dst, int64(c.Index), 10)
			dst = append(dst, `,"message":`...)
			dst = appendMessage(dst, &c.Message)
			dst = append(dst, `,"finish_reason":`...)
			dst = appendJSONString(dst, c.FinishReason)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"usage":`...)
	dst = appendUsage(dst, &r.Usage)
	return append(dst, '}')
}

// AppendJSON appends c's JSON to dst: the same bytes as json.Marshal(c).
func (c *ChatChunk) AppendJSON(dst []byte) []byte {
	dst = appendHead(dst, c.ID, c.Object, c.Created, c.Model)
	if c.Choices == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range c.Choices {
			ch := &c.Choices[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"index":`...)
			dst = strconv.AppendInt(dst, int64(ch.Index), 10)
			dst = append(dst, `,"delta":`...)
			dst = appendDelta(dst, &ch.Delta)
			dst = append(dst, `,"finish_reason":`...)
			if ch.FinishReason == nil {
				dst = append(dst, "null"...)
			} else {
				dst = appendJSONString(dst, *ch.FinishReason)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if c.Usage != nil {
		dst = append(dst, `,"usage":`...)
		dst = appendUsage(dst, c.Usage)
	}
	return append(dst, '}')
}

// appendDelta appends a chunk's delta.
func appendDelta(dst []byte, d *Delta) []byte {
	dst = append(dst, '{')
	open := len(dst)
	if d.Role != "" {
		dst = append(dst, `"role":`...)
		dst = appendJSONString(dst, d.Role)
	}
	if d.Content != "" {
		if len(dst) > open {
			dst = append(dst, ',')
		}
		dst = append(dst, `"content":`...)
		dst = appendJSONString(dst, d.Content)
	}
	if d.ReasoningContent != "" {
		if len(dst) > open {
			dst = append(dst, ',')
		}
		dst = append(dst, `"reasoning_content":`...)
		dst = appendJSONString(dst, d.ReasoningContent)
	}
	if len(d.ToolCalls) > 0 {
		if len(dst) > open {
			dst = append(dst, ',')
		}
		dst = append(dst, `"tool_calls":[`...)
		for i := range d.ToolCalls {
			tc := &d.ToolCalls[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"index":`...)
			dst = strconv.AppendInt(dst, int64(tc.Index), 10)
			if tc.ID != "" {
				dst = append(dst, `,"id":`...)
				dst = appendJSONString(dst, tc.ID)
			}
			if tc.Type != "" {
				dst = append(dst, `,"type":`...)
				dst = appendJSONString(dst, tc.Type)
			}
			dst = append(dst, `,"function":{`...)
			if tc.Function.Name != "" {
				dst = append(dst, `"name":`...)
				dst = appendJSONString(dst, tc.Function.Name)
				dst = append(dst, ',')
			}
			dst = append(dst, `"arguments":`...)
			dst = appendJSONString(dst, tc.Function.Arguments)
			dst = append(dst, "}}"...)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// AppendJSON appends the error event's data to dst: the same bytes as
// json.Marshal(e).
func (e *StreamError) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = appendJSONString(dst, e.Err.Message)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, e.Type)
	dst = append(dst, '}')
	if e.CreditsExhausted {
		dst = append(dst, `,"credits_exhausted":true`...)
	}
	return append(dst, '}')
}
