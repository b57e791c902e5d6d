package inference_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

func TestParseChatRequestContentForms(t *testing.T) {
	req, err := inference.ParseChatRequest([]byte(`{
		"model": "test/chat",
		"messages": [
			{"role": "system", "content": "be brief"},
			{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]},
			{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
			{"role": "tool", "tool_call_id": "c1", "content": "42"}
		],
		"temperature": 0, "max_tokens": 10, "top_k": 40, "stop": ["END"], "seed": 7
	}`))
	require.NoError(t, err)
	require.Equal(t, "be brief", req.Messages[0].Content)
	require.Nil(t, req.Messages[0].Parts)
	require.Equal(t, "hello\nworld", req.Messages[1].Content)
	require.Len(t, req.Messages[1].Parts, 2)
	require.Equal(t, "", req.Messages[2].Content)
	require.Equal(t, "f", req.Messages[2].ToolCalls[0].Function.Name)
	require.NotNil(t, req.Temperature)
	require.Equal(t, 0.0, *req.Temperature)
	require.JSONEq(t, `40`, string(req.TopK))
	require.JSONEq(t, `["END"]`, string(req.Stop))

	// Array content goes back out as an array; tool-call messages have null content.
	b, err := json.Marshal(req.Messages[1])
	require.NoError(t, err)
	require.JSONEq(t, `{"role":"user","content":[{"type":"text","text":"hello"},{"type":"text","text":"world"}]}`, string(b))
	b, err = json.Marshal(req.Messages[2])
	require.NoError(t, err)
	require.JSONEq(t, `{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}`, string(b))
}

func TestParseChatRequestErrors(t *testing.T) {
	for _, body := range []string{
		`{"model": "x", "messages": [`,
		`{"model": 5}`,
		`{"model": "x", "max_tokens": -1}`,
		`{"model": "x", "messages": [{"role": "user", "content": 5}]}`,
	} {
		_, err := inference.ParseChatRequest([]byte(body))
		require.ErrorIs(t, err, fault.Invalid, body)
		require.Contains(t, fault.MessageOf(err), "invalid request body", body)
	}
	_, err := inference.ParseChatRequest([]byte(`{"model": "x", "max_tokens": -1}`))
	require.Equal(t, "invalid request body: field max_tokens has the wrong type (got JSON number -1, want a non-negative integer)", fault.MessageOf(err))
}

func TestValidationRefusesBeforeUpstream(t *testing.T) {
	f := newFixture(t, inferencetest.Config{})
	msg := func(role, content string) inference.Message { return inference.Message{Role: role, Content: content} }
	cases := []struct {
		name string
		req  *inference.ChatRequest
		want string
	}{
		{"unknown model", userRequest("nope", "hi"), "invalid model 'nope'. Available models: test/chat, test/tools"},
		{"no model", userRequest("", "hi"), "invalid model ''. Available models: test/chat, test/tools"},
		{"no messages", &inference.ChatRequest{Model: "test/chat"}, "messages must not be empty"},
		{"unknown role", &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{msg("robot", "x")}},
			`messages[0]: unknown role "robot" (use system, user, assistant or tool)`},
		{"empty assistant", &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{msg("user", "x"), msg("assistant", "")}},
			"messages[1]: assistant messages need content or tool_calls"},
		{"tool without id", &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{msg("user", "x"), msg("tool", "42")}},
			"messages[1]: tool messages need tool_call_id"},
		{"tool answering nothing", &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{
			msg("user", "x"), {Role: "tool", Content: "42", ToolCallID: "c9"}}},
			`messages[1]: tool_call_id "c9" answers no tool call of an earlier assistant message`},
		{"image part", &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{
			{Role: "user", Parts: []inference.ContentPart{{Type: "image_url"}}}}},
			`messages[0]: only text content parts are supported, got "image_url"`},
		{"temperature", &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{msg("user", "x")}, Temperature: new(2.5)},
			"temperature must be between 0 and 2"},
		{"n", &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{msg("user", "x")}, N: json.RawMessage(`1.5`)},
			"n must be an integer from 1 to 128"},
		{"tools on a model without function calling", &inference.ChatRequest{Model: "test/chat",
			Messages: []inference.Message{msg("user", "x")}, Tools: json.RawMessage(`[{"type":"function","function":{"name":"f"}}]`)},
			"model 'test/chat' does not support function calling: tools and tool_choice are not accepted"},
		{"tool_choice on a model without function calling", &inference.ChatRequest{Model: "test/chat",
			Messages: []inference.Message{msg("user", "x")}, ToolChoice: json.RawMessage(`"auto"`)},
			"model 'test/chat' does not support function calling: tools and tool_choice are not accepted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Complete(context.Background(), acct, tc.req)
			require.ErrorIs(t, err, fault.Invalid)
			require.Equal(t, tc.want, fault.MessageOf(err))
			_, err = f.svc.Stream(context.Background(), acct, tc.req)
			require.ErrorIs(t, err, fault.Invalid)
		})
	}
	require.Zero(t, f.fake.Served())
	require.Zero(t, f.ledger.openHolds())
	require.Empty(t, f.ledger.chatEntries(acct))
}

func TestDeveloperRoleSentAsSystem(t *testing.T) {
	f := newFixture(t, inferencetest.Config{})
	req := &inference.ChatRequest{Model: "test/chat", Messages: []inference.Message{
		{Role: inference.RoleDeveloper, Content: "rules"}, {Role: inference.RoleUser, Content: "hi"}}}
	_, err := f.svc.Complete(context.Background(), acct, req)
	require.NoError(t, err)
	msgs := f.lastUpstream(t)["messages"].([]any)
	require.Equal(t, "system", msgs[0].(map[string]any)["role"])
	require.Equal(t, inference.RoleDeveloper, req.Messages[0].Role, "the caller's request is not modified")
}

func TestCatalog(t *testing.T) {
	cat, err := inference.NewCatalog(
		inference.Model{ID: "moonshotai/kimi-k2.6", Name: "Kimi K2.6", Created: 1748000000, ContextLength: 262144,
			MaxOutputTokens: 183500, FrontierRank: 7, InputCentsPer1M: 27, OutputCentsPer1M: 380, Providers: []string{"openrouter"}},
		inference.DevModel(),
	)
	require.NoError(t, err)
	b, err := json.Marshal(cat.List())
	require.NoError(t, err)
	require.JSONEq(t, `{"object":"list","data":[
		{"id":"moonshotai/kimi-k2.6","name":"Kimi K2.6","object":"model","created":1748000000,"owned_by":"perceptron",
		 "context_length":262144,"max_output_tokens":183500,"frontier_rank":7,
		 "pricing":{"input_cents_per_1m":27,"output_cents_per_1m":380},"type":"chat"},
		{"id":"perceptron/dev","name":"Perceptron Dev Model (offline)","object":"model","created":1748000000,"owned_by":"perceptron",
		 "context_length":32768,"max_output_tokens":4096,"frontier_rank":1000,
		 "pricing":{"input_cents_per_1m":100,"output_cents_per_1m":200},"type":"chat"}]}`, string(b))

	m, err := cat.Lookup("moonshotai/kimi-k2.6")
	require.NoError(t, err)
	require.EqualValues(t, 27*100+380*10, m.Cost(100, 10), "cents per 1M tokens are micro-cents per token")
	_, err = cat.Lookup("gpt-9")
	require.ErrorIs(t, err, fault.Invalid)
	require.Equal(t, "invalid model 'gpt-9'. Available models: moonshotai/kimi-k2.6, perceptron/dev", fault.MessageOf(err))

	_, err = inference.NewCatalog(inference.DevModel(), inference.DevModel())
	require.ErrorContains(t, err, "listed twice")
	bad := inference.DevModel()
	bad.Providers = nil
	_, err = inference.NewCatalog(bad)
	require.ErrorContains(t, err, "no provider")
	bad = inference.DevModel()
	bad.MaxOutputTokens = bad.ContextLength + 1
	_, err = inference.NewCatalog(bad)
	require.Error(t, err)
}

func TestServiceNeedsConfiguredProviders(t *testing.T) {
	cat, err := inference.NewCatalog(chatModel())
	require.NoError(t, err)
	_, err = inference.NewService(inference.Options{Catalog: cat, Ledger: newLedger(), Providers: []inference.ModelProvider{inference.NewDevProvider()}})
	require.ErrorContains(t, err, `names provider "fake", which is not configured`)
}
