package inference

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	"github.com/perceptron-cloud/perceptron/fault"
)

// TestProviderCompletesAsGoOpenAI sends the same upstream answers to the
// provider's own non-streamed path and to go-openai's CreateChatCompletion,
// and checks that both give the same answer or the same error.
func TestProviderCompletesAsGoOpenAI(t *testing.T) {
	type answer struct {
		status int
		ctype  string
		body   string
	}
	answers := []answer{}
	for _, b := range upstreamCorpus {
		answers = append(answers, answer{200, "application/json", b})
	}
	answers = append(answers,
		answer{400, "application/json", `{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":"bad"}}`},
		answer{401, "application/json", `{"error":{"message":["a","b"],"type":"auth","code":401}}`},
		answer{429, "application/json", `{"error":{"message":"slow down","code":"429"}}`},
		answer{500, "text/plain", `upstream exploded`},
		answer{502, "application/json", `{"error":null}`},
		answer{503, "application/json", `{"other":1}`},
		answer{404, "application/json", ``},
		answer{302, "application/json", ``},
		answer{201, "application/json", upstreamCorpus[0]},
		answer{200, "application/json", `{"id":"x","choices":[{"message":{"role":"assistant","content":"cut`},
	)
	var current answer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", current.ctype)
		if current.status == 302 {
			w.Header().Set("Location", "/nowhere")
		}
		w.WriteHeader(current.status)
		io.WriteString(w, current.body)
	}))
	defer srv.Close()
	p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL + "/v1/", APIKey: "sk"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := openai.DefaultConfig("sk")
	cfg.BaseURL = srv.URL + "/v1/"
	client := openai.NewClientWithConfig(cfg)
	for i, a := range answers {
		current = a
		got, gerr := p.complete(context.Background(), "m", []byte(`{"model":"m"}`))
		r, werr := client.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{Model: "m"})
		name := strconv.Itoa(i) + " " + strconv.Itoa(a.status) + " " + a.body
		if (gerr != nil) != (werr != nil) {
			t.Fatalf("%s: got error %v, go-openai %v", name, gerr, werr)
		}
		if werr != nil {
			if !sameError(gerr, werr) {
				t.Fatalf("%s: got error %#v, go-openai %#v", name, gerr, werr)
			}
			bg := context.Background()
			if a, b := classify(bg, bg, gerr), classify(bg, bg, werr); a.Error() != b.Error() {
				t.Fatalf("%s: classified %v, go-openai's %v", name, a, b)
			}
			continue
		}
		if want := fromOpenAI(&r); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %#v\nwant %#v", name, got, want)
		}
	}
}

// sameError compares errors by type and content, ignoring pointer identity.
func sameError(a, b error) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	var ae, be *openai.APIError
	if errors.As(a, &ae) && errors.As(b, &be) {
		return reflect.DeepEqual(ae, be)
	}
	var ar, br *openai.RequestError
	if errors.As(a, &ar) && errors.As(b, &br) {
		return ar.HTTPStatusCode == br.HTTPStatusCode && ar.HTTPStatus == br.HTTPStatus &&
			string(ar.Body) == string(br.Body) && ar.Error() == br.Error()
	}
	return a.Error() == b.Error()
}

// TestProviderSendsAsGoOpenAI checks that the provider's own request has
// the URL and headers go-openai's had.
func TestProviderSendsAsGoOpenAI(t *testing.T) {
	var got []*http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r)
		io.WriteString(w, upstreamCorpus[0])
	}))
	defer srv.Close()
	for _, key := range []string{"sk-1", ""} {
		got = nil
		extra := http.Header{"X-Title": {"perceptron"}, "Accept": {"application/x-custom"}}
		p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL + "/v1//", APIKey: key, Header: extra})
		if err != nil {
			t.Fatal(err)
		}
		body := []byte(`{"model":"m","messages":[]}`)
		if _, err := p.complete(context.Background(), "m", body); err != nil {
			t.Fatal(err)
		}
		// What the provider did before: go-openai with the exactBody doer.
		cfg := openai.DefaultConfig(key)
		cfg.BaseURL = srv.URL + "/v1//"
		cfg.HTTPClient = &bodyFromContext{next: http.DefaultClient, header: extra}
		ctx := context.WithValue(context.Background(), bodyKey{}, &streamRequest{body: body})
		if _, err := openai.NewClientWithConfig(cfg).CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: "m"}); err != nil {
			t.Fatal(err)
		}
		a, b := got[0], got[1]
		if a.URL.String() != b.URL.String() || a.Method != b.Method || a.ContentLength != b.ContentLength {
			t.Fatalf("request %s %s %d, go-openai's %s %s %d", a.Method, a.URL, a.ContentLength, b.Method, b.URL, b.ContentLength)
		}
		if !reflect.DeepEqual(a.Header, b.Header) {
			t.Fatalf("headers %v, go-openai's %v", a.Header, b.Header)
		}
		if a.URL.Path != "/v1/chat/completions" || a.Header.Get("Accept") != "application/x-custom" || a.Header.Get("X-Title") != "perceptron" {
			t.Fatalf("request %s %v", a.URL.Path, a.Header)
		}
		if key != "" && a.Header.Get("Authorization") != "Bearer "+key || key == "" && a.Header.Get("Authorization") != "" {
			t.Fatalf("authorization %q", a.Header.Get("Authorization"))
		}
	}
}

func TestProviderRefusesLegacyModels(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++ }))
	defer srv.Close()
	p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.ChatCompletion(context.Background(), &ChatRequest{Model: openai.GPT3TextDavinci003})
	if !errors.Is(err, openai.ErrChatCompletionInvalidModel) || fault.CodeOf(err) != fault.Upstream || calls != 0 {
		t.Fatalf("err %v, %d calls", err, calls)
	}
}
