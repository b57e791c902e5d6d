package inference

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Message roles.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
	// RoleDeveloper is OpenAI's newer name for a system message. It is
	// accepted and sent upstream as [RoleSystem], which every
	// OpenAI-compatible server understands.
	RoleDeveloper = "developer"
)

// Finish reasons.
const (
	FinishStop      = "stop"
	FinishLength    = "length"
	FinishToolCalls = "tool_calls"
)

// Object names of responses and chunks.
const (
	ObjectCompletion = "chat.completion"
	ObjectChunk      = "chat.completion.chunk"
)

// maxN bounds the n parameter (OpenAI's own limit).
const maxN = 128

// ChatRequest is an OpenAI-style chat completion request, with the fields
// the API reference documents. Fields typed json.RawMessage are passed to
// the upstream exactly as received. Fields not listed here are ignored and
// never forwarded.
type ChatRequest struct {
	// Model is a catalog model ID.
	Model string `json:"model"`
	// Messages is the conversation, oldest first.
	Messages []Message `json:"messages"`
	// Stream asks for server-sent events. [Service.Complete] and
	// [Service.Stream] ignore it: the method chosen decides.
	Stream bool `json:"stream,omitempty"`
	// Temperature defaults to 0.7.
	Temperature *float64 `json:"temperature,omitempty"`
	// TopP defaults to 0.9.
	TopP *float64 `json:"top_p,omitempty"`
	// MaxTokens bounds the output; 0 means unset. It is clamped to the
	// model's max output, to the context left after the prompt and to what
	// the balance can pay for.
	MaxTokens uint64 `json:"max_tokens,omitempty"`
	// MaxCompletionTokens is an alias of MaxTokens; when both are set it
	// wins.
	MaxCompletionTokens uint64 `json:"max_completion_tokens,omitempty"`
	// FrequencyPenalty defaults to 0.1.
	FrequencyPenalty *float64 `json:"frequency_penalty,omitempty"`
	// PresencePenalty is passed through when set.
	PresencePenalty *float64 `json:"presence_penalty,omitempty"`
	// TopK is passed through when set.
	TopK json.RawMessage `json:"top_k,omitempty"`
	// Stop is passed through when set (a string or an array of strings).
	Stop json.RawMessage `json:"stop,omitempty"`
	// Seed is passed through when set.
	Seed json.RawMessage `json:"seed,omitempty"`
	// N is the number of choices, passed through when set. It must be an
	// integer from 1 to 128: the hold covers N outputs.
	N json.RawMessage `json:"n,omitempty"`
	// Tools are tool definitions, accepted only by models with function
	// calling.
	Tools json.RawMessage `json:"tools,omitempty"`
	// ToolChoice is accepted only by models with function calling.
	ToolChoice json.RawMessage `json:"tool_choice,omitempty"`
	// ResponseFormat (JSON mode, structured output) is passed through when
	// set. It is not in the API reference; it is kept because agent
	// frameworks rely on it and it does not change what a request costs.
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
	// StreamOptions is ignored on input: upstreams are always asked for
	// usage, and streams always end with a usage chunk.
	StreamOptions *StreamOptions `json:"stream_options,omitempty"`
	// User is an end-user identifier passed through when set.
	User string `json:"user,omitempty"`
}

// StreamOptions are OpenAI's streaming options.
type StreamOptions struct {
	// IncludeUsage asks for a final chunk with usage.
	IncludeUsage bool `json:"include_usage"`
}

// Message is one message of a conversation.
//
// On the wire, content is a string, null, or OpenAI's array of text parts
// ([{"type":"text","text":"..."}]). Content always holds the text; Parts
// keeps the array form, when one was received, so that it goes upstream
// unchanged.
type Message struct {
	// Role is system, developer, user, assistant or tool.
	Role string
	// Content is the text. With Parts set it is the parts' texts joined.
	Content string
	// Parts is the array form of the content, nil for the string form. If
	// set, it is what is marshaled.
	Parts []ContentPart
	// Name optionally names the author.
	Name string
	// ToolCalls are the calls an assistant message makes.
	ToolCalls []ToolCall
	// ToolCallID is the call a tool message answers.
	ToolCallID string
	// ReasoningContent is the reasoning some models return beside the
	// answer (DeepSeek, Kimi); it is passed through.
	ReasoningContent string
}

// ContentPart is one element of an array-form content. Only "text" parts
// are accepted.
type ContentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// ToolCall is a function call made by an assistant message.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall names a function and its JSON-encoded arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type messageWire struct {
	Role             string          `json:"role"`
	Content          json.RawMessage `json:"content"`
	Name             string          `json:"name,omitempty"`
	ToolCalls        []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID       string          `json:"tool_call_id,omitempty"`
	ReasoningContent string          `json:"reasoning_content,omitempty"`
}

// MarshalJSON writes the OpenAI shape. An assistant message with tool calls
// and no text has "content": null.
func (m Message) MarshalJSON() ([]byte, error) {
	return appendMessage(make([]byte, 0, 64+len(m.Content)+len(m.ReasoningContent)), &m), nil
}

// UnmarshalJSON reads the OpenAI shape, accepting string, null and
// array-of-parts content.
func (m *Message) UnmarshalJSON(data []byte) error {
	var w messageWire
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*m = Message{
		Role:             w.Role,
		Name:             w.Name,
		ToolCalls:        w.ToolCalls,
		ToolCallID:       w.ToolCallID,
		ReasoningContent: w.ReasoningContent,
	}
	c := bytes.TrimSpace(w.Content)
	switch {
	case len(c) == 0 || string(c) == "null":
	case c[0] == '"':
		if err := json.Unmarshal(c, &m.Content); err != nil {
			return err
		}
	case c[0] == '[':
		var parts []ContentPart
		if err := json.Unmarshal(c, &parts); err != nil {
			return fmt.Errorf("content: %w", err)
		}
		if parts == nil {
			parts = []ContentPart{}
		}
		m.Parts = parts
		texts := make([]string, len(parts))
		for i, p := range parts {
			texts[i] = p.Text
		}
		m.Content = strings.Join(texts, "\n")
	default:
		return fmt.Errorf("content must be a string or an array of text parts")
	}
	return nil
}

// Usage counts the tokens of a request.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// ChatResponse is a non-streamed completion ("object": "chat.completion").
type ChatResponse struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []Choice `json:"choices"`
	Usage   Usage    `json:"usage"`
}

// Choice is one answer of a [ChatResponse].
type Choice struct {
	Index        int     `json:"index"`
	Message      Message `json:"message"`
	FinishReason string  `json:"finish_reason"`
}

// ChatChunk is one event of a stream ("object": "chat.completion.chunk").
// The last chunk of a stream carries Usage.
type ChatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []ChunkChoice `json:"choices"`
	Usage   *Usage        `json:"usage,omitempty"`
}

// ChunkChoice is one choice's increment in a [ChatChunk].
type ChunkChoice struct {
	Index int   `json:"index"`
	Delta Delta `json:"delta"`
	// FinishReason is null until the choice's last chunk.
	FinishReason *string `json:"finish_reason"`
}

// Delta is the text or tool-call increment of a chunk.
type Delta struct {
	Role             string          `json:"role,omitempty"`
	Content          string          `json:"content,omitempty"`
	ReasoningContent string          `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCallDelta `json:"tool_calls,omitempty"`
}

// ToolCallDelta is a tool call increment: the first names the call, the
// next ones append to its arguments.
type ToolCallDelta struct {
	Index    int               `json:"index"`
	ID       string            `json:"id,omitempty"`
	Type     string            `json:"type,omitempty"`
	Function FunctionCallDelta `json:"function"`
}

// FunctionCallDelta is a function call increment.
type FunctionCallDelta struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// ParseChatRequest decodes a JSON request body. Malformed JSON and wrongly
// typed fields are fault.Invalid; the rules of the fields are checked later
// by [Service.Complete] and [Service.Stream].
func ParseChatRequest(body []byte) (*ChatRequest, error) {
	if r, ok := parseChatRequestFast(body); ok {
		return r, nil
	}
	var r ChatRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "invalid request body: "+jsonProblem(err))
	}
	return &r, nil
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("field %s has the wrong type (got JSON %s, want %s)", te.Field, te.Value, jsonKind(te.Type))
		}
		return "unexpected JSON " + te.Value
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at offset %d", se.Offset)
	}
	return err.Error()
}

// jsonKind names a Go type the way a JSON client thinks of it, so error
// messages never show Go type names.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another type"
}

// isNull reports whether a pass-through value is absent or null.
func isNull(r json.RawMessage) bool {
	r = bytes.TrimSpace(r)
	return len(r) == 0 || string(r) == "null"
}

// parseN reads the n parameter: 1 when absent.
func parseN(r json.RawMessage) (int64, error) {
	if isNull(r) {
		return 1, nil
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(r)), 64)
	if err != nil || f != math.Trunc(f) || f < 1 || f > maxN {
		return 0, fault.Newf(fault.Invalid, "n must be an integer from 1 to %d", maxN)
	}
	return int64(f), nil
}

// validateMessages checks roles, contents and tool-call messages.
func validateMessages(msgs []Message) error {
	if len(msgs) == 0 {
		return fault.New(fault.Invalid, "messages must not be empty")
	}
	callIDs := make(map[string]bool)
	for i, m := range msgs {
		for _, p := range m.Parts {
			if p.Type != "text" {
				return fault.Newf(fault.Invalid, "messages[%d]: only text content parts are supported, got %q", i, p.Type)
			}
		}
		switch m.Role {
		case RoleSystem, RoleDeveloper, RoleUser:
			if len(m.ToolCalls) > 0 {
				return fault.Newf(fault.Invalid, "messages[%d]: only assistant messages may have tool_calls", i)
			}
		case RoleAssistant:
			if m.Content == "" && len(m.ToolCalls) == 0 {
				return fault.Newf(fault.Invalid, "messages[%d]: assistant messages need content or tool_calls", i)
			}
			for j, tc := range m.ToolCalls {
				switch {
				case tc.ID == "":
					return fault.Newf(fault.Invalid, "messages[%d].tool_calls[%d]: id is required", i, j)
				case tc.Type != "function":
					return fault.Newf(fault.Invalid, "messages[%d].tool_calls[%d]: type must be \"function\"", i, j)
				case tc.Function.Name == "":
					return fault.Newf(fault.Invalid, "messages[%d].tool_calls[%d]: function.name is required", i, j)
				}
				callIDs[tc.ID] = true
			}
		case RoleTool:
			if m.ToolCallID == "" {
				return fault.Newf(fault.Invalid, "messages[%d]: tool messages need tool_call_id", i)
			}
			if !callIDs[m.ToolCallID] {
				return fault.Newf(fault.Invalid, "messages[%d]: tool_call_id %q answers no tool call of an earlier assistant message", i, m.ToolCallID)
			}
			if len(m.ToolCalls) > 0 {
				return fault.Newf(fault.Invalid, "messages[%d]: only assistant messages may have tool_calls", i)
			}
		case "":
			return fault.Newf(fault.Invalid, "messages[%d]: role is required", i)
		default:
			return fault.Newf(fault.Invalid, "messages[%d]: unknown role %q (use system, user, assistant or tool)", i, m.Role)
		}
	}
	return nil
}

// validateParams checks the numeric sampling parameters against OpenAI's
// ranges, so that a bad value is refused before any money is held.
func validateParams(r *ChatRequest) error {
	check := func(name string, v *float64, lo, hi float64) error {
		if v != nil && (math.IsNaN(*v) || *v < lo || *v > hi) {
			return fault.Newf(fault.Invalid, "%s must be between %g and %g", name, lo, hi)
		}
		return nil
	}
	if err := check("temperature", r.Temperature, 0, 2); err != nil {
		return err
	}
	if err := check("top_p", r.TopP, 0, 1); err != nil {
		return err
	}
	if err := check("frequency_penalty", r.FrequencyPenalty, -2, 2); err != nil {
		return err
	}
	if err := check("presence_penalty", r.PresencePenalty, -2, 2); err != nil {
		return err
	}
	if !isNull(r.Tools) {
		if t := bytes.TrimSpace(r.Tools); t[0] != '[' {
			return fault.New(fault.Invalid, "tools must be an array")
		}
	}
	return nil
}
