package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// mode is non-streaming or streaming.
type mode int

const (
	modeJSON   mode = iota // non-streaming: latency of the whole response
	modeStream             // streaming: time to the first SSE event
)

func (m mode) String() string {
	if m == modeStream {
		return "stream"
	}
	return "json"
}

func parseMode(s string) (mode, error) {
	switch s {
	case "json":
		return modeJSON, nil
	case "stream":
		return modeStream, nil
	}
	return 0, fmt.Errorf("unknown mode %q (want json or stream)", s)
}

// target is an endpoint under load: the fake upstream directly, or a
// gateway.
type target struct {
	name   string // "direct", "gateway-memory", ...
	url    string // the chat completions URL
	auth   string // bearer token, if any
	bodies [2][]byte
	// want is the answer text every response must carry, and tokens its
	// completion token count.
	want   string
	tokens int
	// ok counts successful requests, warm-up included (the gateways'
	// ledgers must hold as many entries).
	ok atomic.Int64
}

// newTarget builds a target that asks model for answers of tokens tokens.
// A direct target sends stream_options.include_usage, as the gateway does
// upstream, so that the upstream does the same work in both cases.
func newTarget(name, url, auth, model string, tokens int, want string, direct bool) *target {
	t := &target{name: name, url: url, auth: auth, want: want, tokens: tokens}
	msgs := []map[string]string{{"role": "user", "content": "Write one sentence about load testing an API gateway."}}
	for _, m := range []mode{modeJSON, modeStream} {
		body := map[string]any{"model": model, "messages": msgs, "max_tokens": tokens}
		if m == modeStream {
			body["stream"] = true
			if direct {
				body["stream_options"] = map[string]bool{"include_usage": true}
			}
		}
		b, err := json.Marshal(body)
		if err != nil {
			panic(err) // static shapes
		}
		t.bodies[m] = b
	}
	return t
}

// newClient returns the load generator's client: one Transport shared by
// all workers, with enough idle connections per host for every worker to
// keep its own, no compression and HTTP/1.1 (as agents' SDKs speak to a
// plain-HTTP gateway).
func newClient(maxConc int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 4 * max(maxConc, 64)
	t.MaxIdleConnsPerHost = 2 * max(maxConc, 64)
	t.DisableCompression = true
	t.ForceAttemptHTTP2 = false
	return &http.Client{Transport: t}
}

// do sends one request to t and checks the answer completely. lat is the
// latency measured: the whole response for modeJSON, the first SSE event
// for modeStream; full is the time to the end of the response.
func (t *target) do(ctx context.Context, c *http.Client, m mode) (lat, full time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.bodies[m]))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if t.auth != "" {
		req.Header.Set("Authorization", "Bearer "+t.auth)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if m == modeStream {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			return 0, 0, fmt.Errorf("stream answered with Content-Type %q", ct)
		}
		lat, err = readStream(resp.Body, start, t.want, t.tokens)
		if err != nil {
			return 0, 0, err
		}
		return lat, time.Since(start), nil
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	lat = time.Since(start)
	if err := checkCompletion(body, t.want, t.tokens); err != nil {
		return 0, 0, err
	}
	return lat, lat, nil
}

// checkCompletion checks a non-streamed answer: one choice with exactly
// the expected text, and usage with the expected completion tokens.
func checkCompletion(body []byte, want string, tokens int) error {
	var resp struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage *struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	switch {
	case resp.Object != "chat.completion":
		return fmt.Errorf("answer object %q", resp.Object)
	case len(resp.Choices) != 1:
		return fmt.Errorf("answer has %d choices", len(resp.Choices))
	case resp.Choices[0].Message.Content != want:
		return fmt.Errorf("answer text %q, want %q", resp.Choices[0].Message.Content, want)
	case resp.Usage == nil || resp.Usage.CompletionTokens != tokens:
		return fmt.Errorf("answer usage %+v, want %d completion tokens", resp.Usage, tokens)
	}
	return nil
}

// readStream reads a whole SSE stream and checks it: "data:" events of
// JSON chunks whose contents add up to want, a chunk with usage of tokens
// completion tokens, no error event, and "data: [DONE]" as the last event.
// It returns the time from start to the first event.
func readStream(r io.Reader, start time.Time, want string, tokens int) (time.Duration, error) {
	br := bufio.NewReaderSize(r, 16<<10)
	var (
		ttfb    time.Duration
		content strings.Builder
		events  int
		done    bool
		usage   bool
	)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, errors.New("stream line over 16 KiB")
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("stream broken after %d events: %w", events, err)
		}
		if len(line) == 0 && err != nil {
			break // EOF
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 || line[0] == ':' {
			continue // event separator or SSE comment
		}
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			return 0, fmt.Errorf("unexpected stream line %q", line)
		}
		data = bytes.TrimLeft(data, " ")
		if done {
			return 0, errors.New("event after [DONE]")
		}
		if events == 0 {
			ttfb = time.Since(start)
		}
		events++
		if string(data) == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			return 0, fmt.Errorf("stream event %d is not JSON: %w", events, err)
		}
		if len(ev.Error) > 0 && string(ev.Error) != "null" {
			return 0, fmt.Errorf("stream error event: %s", ev.Error)
		}
		for _, c := range ev.Choices {
			content.WriteString(c.Delta.Content)
		}
		if ev.Usage != nil {
			if ev.Usage.CompletionTokens != tokens {
				return 0, fmt.Errorf("stream usage has %d completion tokens, want %d", ev.Usage.CompletionTokens, tokens)
			}
			usage = true
		}
	}
	switch {
	case !done:
		return 0, fmt.Errorf("stream ended after %d events without [DONE]", events)
	case content.String() != want:
		return 0, fmt.Errorf("streamed text %q, want %q", content.String(), want)
	case !usage:
		return 0, errors.New("stream carried no usage")
	}
	return ttfb, nil
}

// result is what a run of one target in one cell measured.
type result struct {
	lat      []time.Duration // per successful request: see target.do
	full     []time.Duration // per successful request: to the end of the response
	errs     int
	firstErr string
	elapsed  time.Duration // wall time of the measured runs
}

// add merges o into r.
func (r *result) add(o result) {
	r.lat = append(r.lat, o.lat...)
	r.full = append(r.full, o.full...)
	r.errs += o.errs
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
	r.elapsed += o.elapsed
}

// ok is the number of successful requests.
func (r *result) ok() int { return len(r.lat) }

// throughput is successful requests per second of measured wall time.
func (r *result) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok()) / r.elapsed.Seconds()
}

// load runs conc workers against t in mode m, each sending requests one
// after another, until d has passed (requests under way then complete) or,
// if n > 0, until n requests were sent.
func load(ctx context.Context, c *http.Client, t *target, m mode, conc int, d time.Duration, n int) result {
	var (
		mu     sync.Mutex
		out    result
		sent   atomic.Int64
		wg     sync.WaitGroup
		labels = pprof.Labels("client", t.name)
	)
	start := time.Now()
	deadline := start.Add(d)
	for range conc {
		wg.Go(func() {
			pprof.Do(ctx, labels, func(ctx context.Context) {
				var local result
				for ctx.Err() == nil {
					if n > 0 {
						if sent.Add(1) > int64(n) {
							break
						}
					} else if !time.Now().Before(deadline) {
						break
					}
					lat, full, err := t.do(ctx, c, m)
					if err != nil {
						if ctx.Err() != nil {
							break
						}
						local.errs++
						if local.firstErr == "" {
							local.firstErr = err.Error()
						}
						continue
					}
					t.ok.Add(1)
					local.lat = append(local.lat, lat)
					local.full = append(local.full, full)
				}
				mu.Lock()
				out.add(local)
				mu.Unlock()
			})
		})
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	return out
}

// percentile returns the p-th percentile (0 < p <= 100) of the samples by
// the nearest-rank method; it sorts s. Zero samples give 0.
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	if !slices.IsSorted(s) {
		slices.Sort(s)
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}
