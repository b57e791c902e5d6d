package inference

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"sync"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Dev model identity.
const (
	// DevModelID is the catalog ID of the offline development model.
	DevModelID = "perceptron/dev"
	// DevProviderName is the name of the provider that serves it.
	DevProviderName = "dev"
)

// devWordsPerChunk is how many words a dev stream chunk carries.
const devWordsPerChunk = 4

// DevModel returns the catalog entry of the offline development model:
// priced (100 cents per 1M input tokens, 200 per 1M output tokens) so
// that billing can be watched working without network, without function
// calling, and served by [NewDevProvider].
func DevModel() Model {
	return Model{
		ID:               DevModelID,
		Name:             "Perceptron Dev Model (offline)",
		Created:          1748000000,
		OwnedBy:          "perceptron",
		ContextLength:    32768,
		MaxOutputTokens:  4096,
		FrontierRank:     1000,
		InputCentsPer1M:  100,
		OutputCentsPer1M: 200,
		FunctionCalling:  false,
		Providers:        []string{DevProviderName},
		UpstreamModel:    DevModelID,
	}
}

// DevProvider is an offline, deterministic [ModelProvider]: the same
// messages and max tokens always give the same answer, built from the last
// user message (in JSON mode, response_format json_object, a JSON object
// of its "key: value" lines; see devJSON). It counts one token per whitespace-separated word, plus 3
// per message and 3 for the reply, and reports that usage. Streams come in
// chunks of four words, the first carrying the role, and end with a usage
// chunk.
type DevProvider struct{}

var _ ModelProvider = (*DevProvider)(nil)

// NewDevProvider returns the dev model's provider, named
// [DevProviderName].
func NewDevProvider() *DevProvider { return &DevProvider{} }

// Name returns [DevProviderName].
func (*DevProvider) Name() string { return DevProviderName }

// devAnswer returns the answer's words, the finish reason and the usage.
func devAnswer(req *ChatRequest) (words []string, finish string, u Usage) {
	var last string
	h := fnv.New32a()
	for _, m := range req.Messages {
		u.PromptTokens += tokensPerMessage + int64(len(strings.Fields(m.Content)))
		_, _ = io.WriteString(h, m.Role+"\x00"+m.Content+"\x00")
		if m.Role == RoleUser {
			last = m.Content
		}
	}
	u.PromptTokens += tokensPerReply
	if jsonMode(req.ResponseFormat) {
		return devJSON(last, req, u)
	}
	echo := strings.Fields(last)
	if len(echo) > 24 {
		echo = append(echo[:24:24], "…")
	}
	text := fmt.Sprintf("Perceptron dev model (offline) here. You said: %q. Prompt fingerprint %08x; %d prompt tokens. This deterministic reply is billed like a real one.",
		strings.Join(echo, " "), h.Sum32(), u.PromptTokens)
	words = strings.Fields(text)
	finish = FinishStop
	limit := req.MaxCompletionTokens
	if limit == 0 {
		limit = req.MaxTokens
	}
	if limit > 0 && uint64(len(words)) > limit {
		words, finish = words[:limit], FinishLength
	}
	u.CompletionTokens = int64(len(words))
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return words, finish, u
}

// jsonMode reports whether a response_format asks for a JSON object.
func jsonMode(rf json.RawMessage) bool {
	var f struct {
		Type string `json:"type"`
	}
	return len(rf) > 0 && json.Unmarshal(rf, &f) == nil && f.Type == "json_object"
}

// devJSON is the dev model's answer in JSON mode: the last user message's
// "key: value" lines as a JSON object of strings (keys lowercased, values
// cut to 40 words; later lines win). A program can watch its JSON-mode
// path work offline by sending its draft as such lines.
func devJSON(last string, req *ChatRequest, u Usage) ([]string, string, Usage) {
	obj := map[string]string{}
	for _, line := range strings.Split(last, "\n") {
		k, v, ok := strings.Cut(line, ":")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		w := strings.Fields(v)
		if len(w) > 40 {
			w = w[:40]
		}
		obj[k] = strings.Join(w, " ")
	}
	b, _ := json.Marshal(obj)
	words := []string{string(b)}
	u.CompletionTokens = int64(len(strings.Fields(string(b))))
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return words, FinishStop, u
}

// ChatCompletion returns the deterministic answer.
func (d *DevProvider) ChatCompletion(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, fault.Wrap(err, fault.Canceled, MsgCanceled)
	}
	words, finish, u := devAnswer(req)
	return &ChatResponse{
		ID:      "chatcmpl-dev",
		Object:  ObjectCompletion,
		Model:   req.Model,
		Choices: []Choice{{Message: Message{Role: RoleAssistant, Content: strings.Join(words, " ")}, FinishReason: finish}},
		Usage:   u,
	}, nil
}

// ChatCompletionStream streams the deterministic answer.
func (d *DevProvider) ChatCompletionStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fault.Wrap(err, fault.Canceled, MsgCanceled)
	}
	words, finish, u := devAnswer(req)
	var chunks []*ChatChunk
	for i := 0; i < len(words); i += devWordsPerChunk {
		part := words[i:min(i+devWordsPerChunk, len(words))]
		text := strings.Join(part, " ")
		if i > 0 {
			text = " " + text
		}
		d := Delta{Content: text}
		if i == 0 {
			d.Role = RoleAssistant
		}
		chunks = append(chunks, &ChatChunk{Choices: []ChunkChoice{{Delta: d}}})
	}
	if len(chunks) == 0 {
		chunks = append(chunks, &ChatChunk{Choices: []ChunkChoice{{Delta: Delta{Role: RoleAssistant}}}})
	}
	chunks = append(chunks,
		&ChatChunk{Choices: []ChunkChoice{{Delta: Delta{}, FinishReason: &finish}}},
		&ChatChunk{Choices: []ChunkChoice{}, Usage: &u})
	for _, c := range chunks {
		c.ID, c.Object, c.Model = "chatcmpl-dev", ObjectChunk, req.Model
	}
	return &devStream{ctx: ctx, chunks: chunks}, nil
}

type devStream struct {
	ctx    context.Context
	mu     sync.Mutex
	chunks []*ChatChunk
	sent   int
	closed bool
}

func (s *devStream) Recv() (*ChatChunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ctx.Err(); err != nil || s.closed {
		if err == nil {
			err = context.Canceled
		}
		err = fault.Wrap(err, fault.Canceled, MsgCanceled)
		if s.sent > 0 {
			return nil, midStream(DevProviderName, err)
		}
		return nil, err
	}
	if len(s.chunks) == 0 {
		return nil, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	s.sent++
	return c, nil
}

func (s *devStream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
