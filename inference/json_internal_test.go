package inference

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// tricky strings: everything encoding/json escapes or replaces.
var trickyStrings = []string{
	"", "plain", "with \"quotes\" and \\backslash\\", "<script>&amp;</script>", "tab\tnew\nline\rcr\bback\fform",
	"\x00\x01\x1f\x7f", "caf\u00e9 \u4e16\u754c \U0001F600", "line\u2028sep\u2029para", "bad \xff\xfe utf8",
	"truncated \xe2\x80", "lone \xed\xa0\x80 surrogate", "/slash/", "\u00a0nbsp", "emoji \xf0\x9f\x98",
}

func randString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return trickyStrings[r.IntN(len(trickyStrings))]
	}
	alphabet := []string{"a", "Z", "0", " ", "\"", "\\", "<", ">", "&", "\n", "\t", "\x00", "\x1f", "\u00e9",
		"\u2028", "\u2029", "\U0001F600", "\xff", "\xe2\x80", "{", "}", "[", "]", ":", ",", "/", "\u007f"}
	var b strings.Builder
	for range r.IntN(12) {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

func randFloat(r *rand.Rand) *float64 {
	switch r.IntN(8) {
	case 0:
		return nil
	case 1:
		return new(0.0)
	case 2:
		return new(1e-7 * r.Float64())
	case 3:
		return new(1e21 * (1 + r.Float64()))
	case 4:
		return new(-r.Float64() * 2)
	case 5:
		return new(math.Copysign(0, -1))
	case 6:
		return new(float64(r.IntN(3)))
	}
	return new(r.Float64() * 2)
}

var rawSamples = []string{`40`, `"END"`, `["a","<b>"]`, ` { "type" : "json_object" , "x": [1, 2.5e3, true, null] } `,
	`null`, `"\u2028 & \u003c"`, "\"line\u2028sep\"", `{"a":"\"<>\""}`, `[ ]`, `-0.5`}

func randRaw(r *rand.Rand) json.RawMessage {
	if r.IntN(3) == 0 {
		return nil
	}
	return json.RawMessage(rawSamples[r.IntN(len(rawSamples))])
}

func randToolCalls(r *rand.Rand) []ToolCall {
	if r.IntN(2) == 0 {
		return nil
	}
	tcs := make([]ToolCall, r.IntN(3))
	for i := range tcs {
		tcs[i] = ToolCall{ID: randString(r), Type: randString(r), Function: FunctionCall{Name: randString(r), Arguments: randString(r)}}
	}
	return tcs
}

func randMessage(r *rand.Rand) Message {
	m := Message{Role: randString(r), Content: randString(r), Name: randString(r), ToolCalls: randToolCalls(r),
		ToolCallID: randString(r), ReasoningContent: randString(r)}
	switch r.IntN(4) {
	case 0:
		m.Content = ""
	case 1:
		m.Parts = []ContentPart{}
		for range r.IntN(3) {
			m.Parts = append(m.Parts, ContentPart{Type: randString(r), Text: randString(r)})
		}
	}
	return m
}

func randRequest(r *rand.Rand) *ChatRequest {
	req := &ChatRequest{Model: randString(r), Stream: r.IntN(2) == 0, Temperature: randFloat(r), TopP: randFloat(r),
		FrequencyPenalty: randFloat(r), PresencePenalty: randFloat(r), TopK: randRaw(r), Stop: randRaw(r), Seed: randRaw(r),
		N: randRaw(r), Tools: randRaw(r), ToolChoice: randRaw(r), ResponseFormat: randRaw(r), User: randString(r)}
	if r.IntN(2) == 0 {
		req.MaxTokens = r.Uint64N(1 << 20)
	}
	if r.IntN(2) == 0 {
		req.MaxCompletionTokens = r.Uint64()
	}
	if r.IntN(3) > 0 {
		req.Messages = []Message{}
		for range r.IntN(4) {
			req.Messages = append(req.Messages, randMessage(r))
		}
	}
	if r.IntN(2) == 0 {
		req.StreamOptions = &StreamOptions{IncludeUsage: r.IntN(2) == 0}
	}
	return req
}

func randUsage(r *rand.Rand) Usage {
	return Usage{PromptTokens: r.Int64N(1e6) - 10, CompletionTokens: r.Int64(), TotalTokens: r.Int64N(100)}
}

func randResponse(r *rand.Rand) *ChatResponse {
	resp := &ChatResponse{ID: randString(r), Object: randString(r), Created: r.Int64() - r.Int64(), Model: randString(r), Usage: randUsage(r)}
	if r.IntN(4) > 0 {
		resp.Choices = []Choice{}
		for i := range r.IntN(3) {
			resp.Choices = append(resp.Choices, Choice{Index: i - 1, Message: randMessage(r), FinishReason: randString(r)})
		}
	}
	return resp
}

func randChunk(r *rand.Rand) *ChatChunk {
	c := &ChatChunk{ID: randString(r), Object: randString(r), Created: r.Int64(), Model: randString(r)}
	if r.IntN(4) > 0 {
		c.Choices = []ChunkChoice{}
		for i := range r.IntN(3) {
			ch := ChunkChoice{Index: i, Delta: Delta{Role: randString(r), Content: randString(r), ReasoningContent: randString(r)}}
			if r.IntN(2) == 0 {
				fr := randString(r)
				ch.FinishReason = &fr
			}
			if r.IntN(2) == 0 {
				for j := range r.IntN(3) {
					ch.Delta.ToolCalls = append(ch.Delta.ToolCalls, ToolCallDelta{Index: j * 7, ID: randString(r), Type: randString(r),
						Function: FunctionCallDelta{Name: randString(r), Arguments: randString(r)}})
				}
			}
			c.Choices = append(c.Choices, ch)
		}
	}
	if r.IntN(2) == 0 {
		u := randUsage(r)
		c.Usage = &u
	}
	return c
}

// TestEncodersMatchEncodingJSON checks the hand-written encoders against
// json.Marshal, byte for byte, on many random values.
func TestEncodersMatchEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		req := randRequest(r)
		want, werr := json.Marshal(req)
		got, gerr := appendRequest([]byte("prefix"), req)
		if (werr != nil) != (gerr != nil) || werr == nil && !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("request %d:\n got %s (%v)\nwant %s (%v)", i, got, gerr, want, werr)
		}

		resp := randResponse(r)
		want, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("response %d:\n got %s\nwant %s", i, got, want)
		}

		c := randChunk(r)
		want, err = json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("chunk %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// oldMessageJSON is Message.MarshalJSON as it was written with
// encoding/json, the reference for the hand-written one.
func oldMessageJSON(m Message) ([]byte, error) {
	w := messageWire{Role: m.Role, Name: m.Name, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID, ReasoningContent: m.ReasoningContent}
	switch {
	case m.Parts != nil:
		b, err := json.Marshal(m.Parts)
		if err != nil {
			return nil, err
		}
		w.Content = b
	case m.Content == "" && len(m.ToolCalls) > 0:
		w.Content = json.RawMessage("null")
	default:
		b, err := json.Marshal(m.Content)
		if err != nil {
			return nil, err
		}
		w.Content = b
	}
	return json.Marshal(w)
}

func TestMessageMarshalMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 20000 {
		m := randMessage(r)
		want, err := oldMessageJSON(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(m)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("message %d:\n got %s (%v)\nwant %s", i, got, err, want)
		}
	}
}

func TestStreamErrorJSON(t *testing.T) {
	for _, e := range []*StreamError{creditsExhausted(), streamFailure(fmt.Errorf("x")), {Err: creditsExhausted().Err, Type: "<&>\u2028"}} {
		type body struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		}
		want, err := json.Marshal(struct {
			Error            body `json:"error"`
			CreditsExhausted bool `json:"credits_exhausted,omitempty"`
		}{body{e.Err.Message, e.Type}, e.CreditsExhausted})
		if err != nil {
			t.Fatal(err)
		}
		got, err := AppendSSE(nil, e)
		if err != nil || string(got) != "data: "+string(want)+"\n\n" {
			t.Fatalf("got %q (%v), want %s", got, err, want)
		}
	}
	got, _ := json.Marshal(creditsExhausted())
	if string(got) != `{"error":{"message":"credit limit reached","type":"insufficient_credits"},"credits_exhausted":true}` {
		t.Fatalf("credit-limit event: %s", got)
	}
}

func TestEncoderErrorsAsEncodingJSON(t *testing.T) {
	for _, req := range []*ChatRequest{
		{Model: "m", Temperature: new(math.NaN())},
		{Model: "m", TopP: new(math.Inf(1))},
		{Model: "m", Stop: json.RawMessage(`{"a":`)},
		{Model: "m", Tools: json.RawMessage(`[1,]`)},
	} {
		_, werr := json.Marshal(req)
		_, gerr := appendRequest(nil, req)
		if werr == nil || gerr == nil || werr.Error() != gerr.Error() {
			t.Fatalf("got %v, want %v", gerr, werr)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}

func FuzzAppendRawJSON(f *testing.F) {
	for _, s := range rawSamples {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"a":`))
	f.Add([]byte("\"\xe2\x80\xa8\""))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) == 0 {
			return
		}
		want, werr := json.Marshal(json.RawMessage(raw))
		got, gerr := appendRawJSON(nil, raw)
		if (werr != nil) != (gerr != nil) || werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s (%v), want %s (%v)", raw, got, gerr, want, werr)
		}
		if validRaw(raw) != json.Valid(raw) {
			t.Fatalf("%q: validRaw %v", raw, validRaw(raw))
		}
	})
}

// requestCorpus are request bodies, valid and not, typical and odd.
var requestCorpus = []string{
	`{"model":"m","messages":[{"role":"user","content":"Write one sentence about load testing an API gateway."}],"max_tokens":64}`,
	`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
	`{
		"model": "test/chat",
		"messages": [
			{"role": "system", "content": "be brief"},
			{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]},
			{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
			{"role": "tool", "tool_call_id": "c1", "content": "42"}
		],
		"temperature": 0, "max_tokens": 10, "top_k": 40, "stop": ["END"], "seed": 7, "unknown": {"x": [1, 2]}
	}`,
	`{"model":"m","messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00 \n\t\"q\" \/"}],"temperature":1.5e0,"top_p":null,"n":2,"user":"u"}`,
	`{"model":"m","messages":[{"role":"user","content":"lone \ud800"}]}`,
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"bad \xff\"}]}",
	`{"model":"m","Model":"n"}`,
	`{"model":"m","model":"n"}`,
	`{"model": "x", "messages": [`,
	`{"model": 5}`,
	`{"model": "x", "max_tokens": -1}`,
	`{"model": "x", "max_tokens": 1.0}`,
	`{"model": "x", "max_tokens": 18446744073709551616}`,
	`{"model": "x", "temperature": 1e400}`,
	`{"model": "x", "messages": [{"role": "user", "content": 5}]}`,
	`{"model": "x", "messages": [{"role": "user", "content": []}]}`,
	`{"model": "x", "messages": [{"role": "user", "content": [{"type":"image_url","image_url":{"url":"x"}}]}]}`,
	`{"model": "x", "messages": [], "tools": [{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}], "tool_choice": "auto"}`,
	`{"model": "x", "messages": [{"role":"assistant","tool_calls":[]}], "response_format": {"type":"json_object"}}`,
	`{"model": "x", "messages": null, "stream": null, "stop": null, "stream_options": null}`,
	`{"model": "x", "stream_options": {"include_usage": false, "other": 1}}`,
	`{"model": "x"} trailing`,
	`{"model": "x"}   `,
	`[]`,
	`null`,
	`{"model": "x", "temperature": 01}`,
	`{"model": "x", "temperature": -}`,
	`{"model": "x", "messages": [null]}`,
	`{"model": "x", "messages": [{"role": "user", "content": "a", "ROLE": "b"}]}`,
	`{"mod\u0065l": "x"}`,
	`{"model": "x", "max_completion_tokens": 5, "frequency_penalty": -2, "presence_penalty": 2}`,
}

func FuzzParseChatRequest(f *testing.F) {
	for _, s := range requestCorpus {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkParse(t, body) })
}

func checkParse(t *testing.T, body []byte) bool {
	t.Helper()
	fast, ok := parseChatRequestFast(body)
	if !ok {
		return false
	}
	var want ChatRequest
	if err := json.Unmarshal(body, &want); err != nil {
		t.Fatalf("%s: the fast path accepted what encoding/json refuses: %v", body, err)
	}
	if !reflect.DeepEqual(fast, &want) {
		t.Fatalf("%s:\n fast %#v\n want %#v", body, fast, &want)
	}
	return true
}

func TestParseChatRequestFastPath(t *testing.T) {
	accepted := 0
	for _, s := range requestCorpus {
		if checkParse(t, []byte(s)) {
			accepted++
		}
	}
	// The typical requests must take the fast path.
	for _, s := range requestCorpus[:4] {
		if _, ok := parseChatRequestFast([]byte(s)); !ok {
			t.Errorf("fast path refused %s", s)
		}
	}
	t.Logf("fast path took %d of %d", accepted, len(requestCorpus))
	// Random requests, encoded by encoding/json, decode the same.
	r := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		req := randRequest(r)
		for i := range req.Messages {
			req.Messages[i].Parts = nil
		}
		b, err := json.Marshal(req)
		if err != nil {
			continue
		}
		checkParse(t, b)
	}
}

// upstreamCorpus are upstream answers, as OpenAI-compatible servers send
// them, and odd ones.
var upstreamCorpus = []string{
	`{"id":"chatcmpl-fake","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"The quick"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}` + "\n",
	`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
	  "usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
	  "service_tier":"default","system_fingerprint":"fp_1"}`,
	`{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"provider":"OpenRouter"}`,
	`{"id":"x","choices":[{"message":{"role":"assistant","content":"a","reasoning_content":"think"},"finish_reason":null,"native_finish_reason":"stop"}]}`,
	`{"id":"x","choices":[]}`,
	`{"id":"x"}`,
	`{}`,
	`{"id":"x","choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}`,
	`{"id":"x","created":"soon"}`,
	`{"id":"x","created":1.5}`,
	`{"id":"x","usage":{"prompt_tokens":-3,"prompt_tokens_details":{"cached_tokens":"x"}}}`,
	`{"id":"x","choices":[{"message":{"role":"assistant","content":"a","function_call":{"name":"f","arguments":"{}"}}}]}`,
	`{"id":"x","choices":[{"message":{"role":"assistant","content":"a","function_call":5}}]}`,
	`{"id":"x","choices":[{"message":{"tool_calls":[{"index":"zero","id":"c"}]}}]}`,
	`{"id":"x","choices":[{"message":null,"logprobs":{"content":[]}}]}`,
	`{"id":"x","choices":null,"usage":null}`,
	`{"id":"x","ID":"y"}`,
	`{"id":"x"} {"id":"y"}`,
	`{"id":"x"`,
	``,
	`   `,
	`null`,
	`{"id":"x","prompt_filter_results":[{"index":0}]}`,
	`{"id":"x","choices":[{"message":{"MultiContent":[]}}]}`,
}

func FuzzDecodeUpstream(f *testing.F) {
	for _, s := range upstreamCorpus {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkUpstream(t, body) })
}

func checkUpstream(t *testing.T, body []byte) bool {
	t.Helper()
	fast, ok := decodeUpstreamFast(body)
	if !ok {
		return false
	}
	want, err := decodeUpstream(body)
	if err != nil {
		t.Fatalf("%s: the fast path accepted what encoding/json refuses: %v", body, err)
	}
	if !reflect.DeepEqual(fast, want) {
		t.Fatalf("%s:\n fast %#v\n want %#v", body, fast, want)
	}
	return true
}

func TestDecodeUpstreamFastPath(t *testing.T) {
	accepted := 0
	for _, s := range upstreamCorpus {
		if checkUpstream(t, []byte(s)) {
			accepted++
		}
	}
	for _, s := range upstreamCorpus[:5] {
		if _, ok := decodeUpstreamFast([]byte(s)); !ok {
			t.Errorf("fast path refused %s", s)
		}
	}
	t.Logf("fast path took %d of %d", accepted, len(upstreamCorpus))
}

var chunkCorpus = []string{
	`{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"The"},"finish_reason":null}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":" quick"},"logprobs":null,"finish_reason":null}]}`,
	`{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
	`{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}}`,
	`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}`,
	`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]}}]}`,
	`{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}],"usage":null}`,
	`{"error":{"message":"provider failed mid-stream","type":"server_error","code":502}}`,
	`{"id":"c","choices":[{"index":"0"}]}`,
	`{"id":"c","choices":[{"delta":{"content":5}}]}`,
	`{"id":"c","Choices":[]}`,
	`{"id":"c"`,
}

func FuzzDecodeChunk(f *testing.F) {
	for _, s := range chunkCorpus {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkChunk(t, data) })
}

func checkChunk(t *testing.T, data []byte) bool {
	t.Helper()
	fast, ok := decodeChunkFast(data)
	if !ok {
		return false
	}
	want := new(ChatChunk)
	if err := json.Unmarshal(data, want); err != nil {
		t.Fatalf("%s: the fast path accepted what encoding/json refuses: %v", data, err)
	}
	if !reflect.DeepEqual(fast, want) {
		t.Fatalf("%s:\n fast %#v\n want %#v", data, fast, want)
	}
	return true
}

func TestDecodeChunkFastPath(t *testing.T) {
	for _, s := range chunkCorpus {
		checkChunk(t, []byte(s))
	}
	for _, s := range chunkCorpus[:8] {
		if _, ok := decodeChunkFast([]byte(s)); !ok {
			t.Errorf("fast path refused %s", s)
		}
	}
	// Random chunks, encoded by the encoder, decode the same.
	r := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		checkChunk(t, randChunk(r).AppendJSON(nil))
	}
}
