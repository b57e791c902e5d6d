package httpserver_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// personaEnv is a platform whose personas reply with model (on providers).
func personaEnv(t *testing.T, model string, pc perceptron.PersonasConfig, models []inference.Model, providers ...inference.ModelProvider) *env {
	pc.Model = model
	return newEnv(t, perceptron.Config{Dev: true, Personas: pc, Inference: perceptron.InferenceConfig{Models: models, Providers: providers}})
}

// mkPersona creates a persona and a session for a, returning their IDs.
func (e *env) mkPersona(t *testing.T, a agent) (string, string) {
	t.Helper()
	st, p := e.call("POST", "/api/personas/new", a.key, map[string]string{"personality_id": "jensen", "name": "My Jensen"})
	require.Equal(t, 200, st, "%v", p)
	st, s := e.call("POST", "/api/personas/"+p["id"].(string)+"/sessions", a.key, map[string]string{"name": "Evening chats"})
	require.Equal(t, 200, st, "%v", s)
	return p["id"].(string), s["id"].(string)
}

// messages returns the session's whole history.
func (e *env) messages(t *testing.T, a agent, pid, sid, query string) ([]map[string]any, bool) {
	t.Helper()
	st, b := e.call("GET", "/api/personas/"+pid+"/sessions/"+sid+"/messages"+query, a.key, nil)
	require.Equal(t, 200, st, "%v", b)
	var out []map[string]any
	for _, m := range b["messages"].([]any) {
		out = append(out, m.(map[string]any))
	}
	return out, b["has_more"].(bool)
}

// awaitReply waits until the session's last message is a finished reply.
func (e *env) awaitReply(t *testing.T, a agent, pid, sid string, n int) []map[string]any {
	t.Helper()
	var msgs []map[string]any
	require.Eventually(t, func() bool {
		msgs, _ = e.messages(t, a, pid, sid, "?limit=200")
		return len(msgs) == n && msgs[n-1]["status"] != "pending"
	}, 10*time.Second, 20*time.Millisecond)
	return msgs
}

func TestPersonaEndpoints(t *testing.T) {
	e := personaEnv(t, "", perceptron.PersonasConfig{}, nil)
	a := e.newAgent(t, billing.FromCents(100))
	b := e.newAgent(t, billing.FromCents(100))

	st, ps := e.call("GET", "/api/personas/personalities", "", nil)
	require.Equal(t, 200, st)
	list := ps["personalities"].([]any)
	require.GreaterOrEqual(t, len(list), 6)
	require.Equal(t, "jensen", list[0].(map[string]any)["id"])
	require.NotContains(t, list[0], "system", "the prompt stays server-side")

	e.expectError(403, "master API keys are not authorized for this operation; use a client API key", "GET", "/api/personas", a.master, nil)
	e.expectError(400, "unknown personality_id: see GET /api/personas/personalities", "POST", "/api/personas/new", a.key, map[string]string{"personality_id": "nobody", "name": "x"})
	e.expectError(400, "name must be between 1 and 100 characters", "POST", "/api/personas/new", a.key, map[string]string{"personality_id": "jensen", "name": ""})
	pid, sid := e.mkPersona(t, a)
	st, p := e.call("GET", "/api/personas/"+pid, a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, "jensen", p["personality_id"])
	require.Equal(t, "My Jensen", p["name"])
	require.Equal(t, float64(e.clock.Now().Unix()), p["created_at"])
	_, l := e.call("GET", "/api/personas", a.key, nil)
	require.Len(t, l["personas"], 1)
	_, l = e.call("GET", "/api/personas/"+pid+"/sessions", a.key, nil)
	require.Len(t, l["sessions"], 1)
	require.Equal(t, map[string]any{"id": sid, "persona_id": pid, "name": "Evening chats", "created_at": float64(e.clock.Now().Unix())}, l["sessions"].([]any)[0])

	// Another wallet is refused everywhere.
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/personas/" + pid}, {"DELETE", "/api/personas/" + pid}, {"GET", "/api/personas/" + pid + "/sessions"},
		{"POST", "/api/personas/" + pid + "/sessions"}, {"DELETE", "/api/personas/" + pid + "/sessions/" + sid},
		{"GET", "/api/personas/" + pid + "/sessions/" + sid + "/messages"}, {"POST", "/api/personas/" + pid + "/sessions/" + sid + "/messages/new"},
		{"GET", "/api/personas/" + pid + "/files"}, {"PUT", "/api/personas/" + pid + "/files/notes.md"},
	} {
		e.expectError(403, "you do not own this persona", c.method, c.path, b.key, map[string]string{"name": "x", "content": "x"})
	}
	e.expectError(404, "persona not found", "GET", "/api/personas/nope", a.key, nil)
	e.expectError(404, "session not found", "GET", "/api/personas/"+pid+"/sessions/nope/messages", a.key, nil)
	e.expectError(400, "content is required", "POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": " "})

	// A message: 202 at once, then the reply, billed to the wallet.
	st, sent := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": "Hello, tell me about yourself."})
	require.Equal(t, 202, st, "%v", sent)
	msgs := e.awaitReply(t, a, pid, sid, 2)
	require.Equal(t, sent["message_id"], msgs[0]["id"])
	require.Equal(t, "user", msgs[0]["role"])
	require.Equal(t, "complete", msgs[0]["status"])
	require.Equal(t, "assistant", msgs[1]["role"])
	require.Equal(t, "complete", msgs[1]["status"], "%v", msgs[1])
	require.Contains(t, msgs[1]["content"], "Perceptron dev model")
	h := e.history(a.key)
	require.Equal(t, "ChatInference", h[0].TxType)
	require.Contains(t, h[0].Description, "persona My Jensen")
	require.Negative(t, h[0].AmountMicroCents)

	// Files.
	st, f := e.call("PUT", "/api/personas/"+pid+"/files/notes.md", a.key, map[string]string{"content": "The user likes GPUs."})
	require.Equal(t, 200, st, "%v", f)
	require.Equal(t, "notes.md", f["name"])
	st, f = e.call("GET", "/api/personas/"+pid+"/files/notes.md", a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, "The user likes GPUs.", f["content"])
	_, fl := e.call("GET", "/api/personas/"+pid+"/files", a.key, nil)
	require.Len(t, fl["files"], 1)
	e.expectError(400, "file names are 1-100 letters, digits, '.', '-' or '_'", "PUT", "/api/personas/"+pid+"/files/a$b", a.key, map[string]string{"content": "x"})
	e.expectError(400, "a file holds at most 65536 bytes", "PUT", "/api/personas/"+pid+"/files/big", a.key, map[string]string{"content": strings.Repeat("x", 70000)})
	e.expectError(404, "file not found", "GET", "/api/personas/"+pid+"/files/missing", a.key, nil)
	st, _ = e.call("DELETE", "/api/personas/"+pid+"/files/notes.md", a.key, nil)
	require.Equal(t, 200, st)

	// Deleting the persona removes everything.
	st, d := e.call("DELETE", "/api/personas/"+pid, a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, map[string]any{"status": "deleted"}, d)
	e.expectError(404, "persona not found", "GET", "/api/personas/"+pid, a.key, nil)
	e.expectError(404, "persona not found", "GET", "/api/personas/"+pid+"/sessions/"+sid+"/messages", a.key, nil)
}

// wsConn dials the session's stream.
func (e *env) wsConn(t *testing.T, key, pid, sid string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(e.url, "http://", "ws://", 1)+"/api/personas/"+pid+"/sessions/"+sid+"/stream?token="+key, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

type wsEvent struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func readEvent(t *testing.T, c *websocket.Conn) (string, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	require.NoError(t, err)
	var ev wsEvent
	require.NoError(t, json.Unmarshal(b, &ev))
	var p map[string]any
	require.NoError(t, json.Unmarshal(ev.Payload, &p))
	return ev.Type, p
}

// readUntilReply reads events until a finished assistant message; it
// returns the user message seen, the deltas joined and the reply.
func readUntilReply(t *testing.T, c *websocket.Conn) (user map[string]any, deltas string, reply map[string]any) {
	t.Helper()
	for {
		typ, p := readEvent(t, c)
		switch typ {
		case "delta":
			deltas += p["content"].(string)
		case "message":
			m := p["message"].(map[string]any)
			if m["role"] == "user" {
				user = m
			} else if m["status"] != "pending" {
				return user, deltas, m
			}
		}
	}
}

func TestPersonaStream(t *testing.T) {
	e := personaEnv(t, "", perceptron.PersonasConfig{}, nil)
	a := e.newAgent(t, billing.FromCents(100))
	pid, sid := e.mkPersona(t, a)
	c1 := e.wsConn(t, a.key, pid, sid)
	c2 := e.wsConn(t, a.key, pid, sid)
	ctx := context.Background()

	// Over the socket.
	require.NoError(t, c1.Write(ctx, websocket.MessageText, []byte(`{"type":"message","content":"What are you thinking about?"}`)))
	for _, c := range []*websocket.Conn{c1, c2} {
		user, deltas, reply := readUntilReply(t, c)
		require.Equal(t, "What are you thinking about?", user["content"])
		require.Equal(t, "complete", reply["status"])
		require.Equal(t, reply["content"], deltas, "the deltas make the reply")
	}
	// Over POST: the sockets see it too.
	st, _ := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": "And now?"})
	require.Equal(t, 202, st)
	user, _, reply := readUntilReply(t, c2)
	require.Equal(t, "And now?", user["content"])
	require.Contains(t, reply["content"], "And now?")

	// Bad frames get an error event, and the connection lives on.
	for _, frame := range []string{`not json`, `{"type":"shout","content":"x"}`, `{"type":"message","content":""}`} {
		require.NoError(t, c1.Write(ctx, websocket.MessageText, []byte(frame)))
		typ, p := readEvent(t, c1)
		for typ != "error" { // skip the events of the POST above
			typ, p = readEvent(t, c1)
		}
		require.NotEmpty(t, p["message"])
	}
	require.NoError(t, c1.Write(ctx, websocket.MessageText, []byte(`{"type":"message","content":"still there?"}`)))
	_, _, reply = readUntilReply(t, c1)
	require.Contains(t, reply["content"], "still there?")

	// Reconnect and page the history: 8 messages, in order.
	c1.Close(websocket.StatusNormalClosure, "")
	all, more := e.messages(t, a, pid, sid, "")
	require.False(t, more)
	require.Len(t, all, 6)
	older, more := e.messages(t, a, pid, sid, "?limit=2&before="+all[4]["id"].(string))
	require.True(t, more)
	require.Equal(t, []any{all[2]["id"], all[3]["id"]}, []any{older[0]["id"], older[1]["id"]})
	c3 := e.wsConn(t, a.key, pid, sid)
	require.NoError(t, c3.Write(ctx, websocket.MessageText, []byte(`{"type":"message","content":"back"}`)))
	_, _, reply = readUntilReply(t, c3)
	require.Equal(t, "complete", reply["status"])

	// Refused: no token, a master key, another wallet.
	b := e.newAgent(t, billing.FromCents(100))
	for _, key := range []string{"", a.master, b.key} {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, res, err := websocket.Dial(dctx, strings.Replace(e.url, "http://", "ws://", 1)+"/api/personas/"+pid+"/sessions/"+sid+"/stream?token="+key, nil)
		cancel()
		require.Error(t, err)
		require.Contains(t, []int{401, 403}, res.StatusCode)
	}
}

// A failing model stores a failed reply and never blocks the session.
func TestPersonaFailingModel(t *testing.T) {
	m := chatModel("up/model", "down", false)
	e := personaEnv(t, "up/model", perceptron.PersonasConfig{}, []inference.Model{m}, downProvider(t, "down"))
	a := e.newAgent(t, billing.FromCents(100))
	pid, sid := e.mkPersona(t, a)
	for i := range 2 {
		st, _ := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": "hi"})
		require.Equal(t, 202, st)
		msgs := e.awaitReply(t, a, pid, sid, 2*(i+1))
		require.Equal(t, "failed", msgs[len(msgs)-1]["status"])
		require.Equal(t, "reply failed: inference service unavailable", msgs[len(msgs)-1]["content"])
	}
	require.Equal(t, int64(100), e.balanceCents(a.key), "a failed reply costs nothing")
}

// Deleting a session mid-reply cancels it; nothing is left.
func TestPersonaSessionDeletedMidReply(t *testing.T) {
	fake, prov := fakeProvider(t, "slow", inferencetest.Config{CompletionTokens: 40, Chunks: 40, ChunkDelay: 100 * time.Millisecond})
	e := personaEnv(t, "slow/model", perceptron.PersonasConfig{}, []inference.Model{chatModel("slow/model", "slow", false)}, prov)
	a := e.newAgent(t, billing.FromCents(100))
	pid, sid := e.mkPersona(t, a)
	c := e.wsConn(t, a.key, pid, sid)
	st, _ := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": "tell me a long story"})
	require.Equal(t, 202, st)
	for { // wait for the first delta
		typ, _ := readEvent(t, c)
		if typ == "delta" {
			break
		}
	}
	st, _ = e.call("DELETE", "/api/personas/"+pid+"/sessions/"+sid, a.key, nil)
	require.Equal(t, 200, st)
	require.Eventually(t, func() bool { return fake.Canceled() >= 1 }, 5*time.Second, 10*time.Millisecond, "the upstream request is canceled")
	e.expectError(404, "session not found", "GET", "/api/personas/"+pid+"/sessions/"+sid+"/messages", a.key, nil)
}

// A history longer than the context is compacted: older turns are
// summarized, the latest user turn is kept.
func TestPersonaCompaction(t *testing.T) {
	fake, prov := fakeProvider(t, "rec", inferencetest.Config{CompletionTokens: 5})
	e := personaEnv(t, "rec/model", perceptron.PersonasConfig{ContextTokens: 400}, []inference.Model{chatModel("rec/model", "rec", false)}, prov)
	a := e.newAgent(t, billing.FromCents(500))
	pid, sid := e.mkPersona(t, a)
	for i := range 6 {
		content := strings.Repeat("turn "+string(rune('a'+i))+" ", 60)
		if i == 5 {
			content = "the latest question"
		}
		st, _ := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": content})
		require.Equal(t, 202, st)
		e.awaitReply(t, a, pid, sid, 2*(i+1))
	}
	// The last reply's request: system prompt, a summary, then the newest
	// turns ending with the latest question.
	var last map[string]any
	for _, r := range fake.Requests() {
		j := r.JSON()
		msgs := j["messages"].([]any)
		if msgs[len(msgs)-1].(map[string]any)["content"] == "the latest question" {
			last = j
		}
	}
	require.NotNil(t, last)
	msgs := last["messages"].([]any)
	require.Equal(t, "system", msgs[0].(map[string]any)["role"])
	require.Contains(t, msgs[1].(map[string]any)["content"], "Summary of the")
	total := 0
	for _, m := range msgs {
		total += len(m.(map[string]any)["content"].(string))
	}
	require.Less(t, total, 400*3+2000, "within the budget, roughly")
	h := e.history(a.key)
	summaries := 0
	for _, tx := range h {
		if strings.Contains(tx.Description, "history summary") {
			summaries++
		}
	}
	require.Positive(t, summaries, "the summaries are billed too")
}

// The stream's token never reaches the logs, even at debug level.
func TestPersonaStreamTokenNotLogged(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug - 10}))
	e := newEnv(t, perceptron.Config{Dev: true, Logger: log})
	a := e.newAgent(t, billing.FromCents(100))
	pid, sid := e.mkPersona(t, a)
	c := e.wsConn(t, a.key, pid, sid)
	require.NoError(t, c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"message","content":"hi"}`)))
	readUntilReply(t, c)
	c.Close(websocket.StatusNormalClosure, "")
	// A refused one too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, _ = websocket.Dial(ctx, strings.Replace(e.url, "http://", "ws://", 1)+"/api/personas/"+pid+"/sessions/"+sid+"/stream?token="+a.key+"x", nil)
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, logs.String(), "/stream", "the stream's requests are logged")
	require.NotContains(t, logs.String(), a.key)
	require.NotContains(t, logs.String(), "token=")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// What a wallet stores through personas is bounded by what it pays: a
// wallet that cannot pay $0.05 cannot send (402, over POST and over the
// stream), a session queues at most 8 replies (429), a wallet holds at
// most 100 personas (400); a refused message is not stored.
func TestPersonaLimits(t *testing.T) {
	_, prov := fakeProvider(t, "slow", inferencetest.Config{CompletionTokens: 20, Chunks: 20, ChunkDelay: 200 * time.Millisecond})
	e := personaEnv(t, "slow/model", perceptron.PersonasConfig{Workers: 1}, []inference.Model{chatModel("slow/model", "slow", false)}, prov)
	broke := e.newAgent(t, 0)
	pid, sid := e.mkPersona(t, broke)
	e.expectError(402, "insufficient credits (need at least $0.05 for this request)", "POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", broke.key, map[string]string{"content": "hi"})
	c := e.wsConn(t, broke.key, pid, sid)
	require.NoError(t, c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"message","content":"hi"}`)))
	typ, p := readEvent(t, c)
	require.Equal(t, "error", typ)
	require.Equal(t, "insufficient credits (need at least $0.05 for this request)", p["message"])
	msgs, _ := e.messages(t, broke, pid, sid, "")
	require.Empty(t, msgs, "nothing stored")

	a := e.newAgent(t, 20*billing.Dollar) // a reply of the test model holds about $3.50
	pid, sid = e.mkPersona(t, a)
	for i := range 10 { // one reply is written at a time, slowly: they queue
		st, out := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": "hi"})
		if i < 8 {
			require.Equal(t, 202, st, "%d: %v", i, out)
			continue
		}
		require.Equal(t, 429, st, "%v", out)
		require.Equal(t, "8 replies are already pending in this session: wait for one to finish", out["error"].(map[string]any)["message"])
	}
	msgs, _ = e.messages(t, a, pid, sid, "?limit=200")
	require.Len(t, msgs, 16, "the refused messages are not stored")

	for i := 1; i < 100; i++ {
		st, out := e.call("POST", "/api/personas/new", a.key, map[string]string{"personality_id": "coach", "name": "n"})
		require.Equal(t, 200, st, "%d: %v", i, out)
	}
	e.expectError(400, "a wallet holds at most 100 personas: delete one first", "POST", "/api/personas/new", a.key, map[string]string{"personality_id": "coach", "name": "n"})
	st, _ := e.call("DELETE", "/api/personas/"+pid, a.key, nil)
	require.Equal(t, 200, st)
	st, _ = e.call("POST", "/api/personas/new", a.key, map[string]string{"personality_id": "coach", "name": "n"})
	require.Equal(t, 200, st, "deleting one makes room")
}
