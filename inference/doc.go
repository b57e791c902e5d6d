// Package inference is Perceptron's chat completions: an OpenAI-compatible
// request is validated, priced, held against the wallet's balance, routed
// to a model provider, and billed to the micro-cent from the tokens used.
//
// The HTTP handlers of POST /api/v1/chat/completions and GET /api/models,
// and Go programs embedding the SDK, call the same [Service]:
// [Service.Complete] for a whole answer, [Service.Stream] for server-sent
// events, [Service.Catalog] for the model list. Providers implement
// [ModelProvider]: [OpenAIProvider] for any OpenAI-compatible API (OpenAI,
// OpenRouter, vLLM, llama.cpp server, Ollama) and [DevProvider], an
// offline deterministic model. A [Router] spreads requests over them.
// Package inferencetest has a fake upstream for tests and benchmarks.
//
// Speech-to-text goes through the same service: [Service.Transcribe]
// (POST /api/v1/audio/transcriptions and /api/audio/transcriptions)
// transcribes any io.Reader on an [STTModel], served by [STTProvider]s
// ([OpenAISTTProvider] for OpenAI, Groq and self-hosted whisper servers,
// [DevSTTProvider] offline) through the same [Router].
//
// # Decisions the API reference leaves open
//
// Requests.
//   - Fields outside the reference are ignored and not forwarded, except
//     response_format (JSON mode), which agent frameworks rely on and which
//     does not change what a request costs.
//   - Roles are system, user, assistant and tool; "developer" (OpenAI's
//     newer name for system) is accepted and sent upstream as "system",
//     which every OpenAI-compatible server understands. "function" is
//     refused.
//   - Content may be a string or OpenAI's array of text parts; other part
//     types (images) are refused. The array goes upstream as received; its
//     texts, joined by "\n", are what is counted. Content may be empty,
//     except that an assistant message needs content or tool_calls.
//   - Tool messages need a tool_call_id answering a tool call of an earlier
//     assistant message; only assistant messages may carry tool_calls.
//   - temperature must lie in [0, 2], top_p in [0, 1], the penalties in
//     [-2, 2]: OpenAI's ranges, checked before money is held. Defaults
//     (temperature 0.7, top_p 0.9, frequency_penalty 0.1) are filled in
//     when a field is absent or null; an explicit 0 is kept and sent.
//   - top_k, stop and seed are forwarded byte for byte. n is forwarded too,
//     but must be an integer from 1 to 128, because the hold covers n
//     answers.
//   - max_tokens and max_completion_tokens of 0 mean unset. With both set,
//     max_completion_tokens wins. The clamped value is always sent
//     upstream, so that the hold bounds the cost: in max_completion_tokens
//     if the caller used it, in max_tokens if the caller used it or
//     neither.
//   - tools and tool_choice are refused (400) for a model without function
//     calling, even tool_choice "none". Tool-call messages in the history
//     are not.
//   - The model field of responses and chunks is the catalog ID; id is
//     "chatcmpl-" and 32 hex digits of our own, the same in every chunk;
//     created is when the request arrived. The upstream's own id and model
//     name are not shown.
//
// Counting tokens. Upstream usage is authoritative; counting is for
// clamping and for billing when an upstream gives no usage.
//   - The tokenizer is OpenAI's o200k_base ([Tokenizer]), from the BPE file
//     embedded in github.com/pkoukk/tiktoken-go-loader, built per instance
//     (tiktoken-go's global loader is never set): it never touches the
//     network. A prompt counts its texts plus 3 tokens per message, 1 per
//     name, and 3 for the reply, as OpenAI documents.
//   - That tokenizer is slow (about 1.5 MB/s) and not the model's own, so
//     the service counts lazily: it first bounds the prompt from above
//     with one token per byte plus a template allowance (a byte-level BPE
//     token is never shorter than a byte). Only when that bound does not
//     fit the context, or the balance, is the prompt tokenized.
//   - Clamping to the context reserves 5% of the counted prompt for the
//     difference between o200k_base and the model's tokenizer; a prompt
//     whose count reaches the context is refused (400).
//   - During a stream, output is estimated as it arrives by counting
//     pre-tokenizer pieces (a fast estimate that stays at or below the
//     tokenizer's count), and, past three quarters of what the hold pays
//     for, with the tokenizer, chunk by chunk. Upstream usage reported
//     along the way is used when higher.
//
// Money. Prices in cents per million tokens are micro-cents per token, so
// costs are exact integers ([Model.Cost]).
//   - A request needs $0.05 available ([MinimumHold]); otherwise it is
//     refused with 402 before any upstream call, streams included.
//   - The hold is the prompt (as bounded or counted) plus max tokens times
//     n times the output price, raised to $0.05 and capped by the available
//     balance. When the balance cannot pay for max tokens, max tokens is
//     lowered to what it can pay for; a request is refused only if not even
//     one output token is affordable. Holds expire after [DefaultHoldTTL]
//     (15 minutes), which must exceed the upstream timeout.
//   - Concurrent requests of one wallet cannot overdraw it: each request
//     places one "hold up to" ([billing.HoldRequest] MinAmount $0.05), and
//     the ledger decides the amount in the same atomic operation that
//     reserves it: what the request may cost, or the whole available
//     balance if that is less but at least $0.05, or a refusal (402). No
//     balance is read beforehand. Max tokens is then clamped to what was
//     held. When the whole available balance was held, the hold may exceed
//     what the clamped request can cost (the prompt's count may be below
//     its bound; the remainder may not pay for a whole token): the request
//     is still billed at most that cost, and the rest is released when it
//     is settled.
//   - The settlement is exact: prompt and completion tokens from the
//     upstream's usage (or counted) times the prices, clamped to the hold.
//     It is one ChatInference entry, described "Chat: <model> (<in> in /
//     <out> out tokens)", with its usage for metrics; the [PointsHook]
//     runs after it. Transient ledger failures are retried; a completion
//     that cannot be billed is not returned.
//   - A request that fails before output releases its hold and costs
//     nothing, also when the caller cancels a non-streamed request.
//
// Streams.
//   - The router returns a stream only once its first chunk has arrived;
//     any failure before that (including 402, unknown model, upstream
//     down) is a plain error for an ordinary HTTP error response.
//   - Chunks are passed on as they arrive. Only a choice's finishing chunk
//     waits for the upstream's next event (its usage chunk, or the end), so
//     that the final chunk carries both finish_reason and usage as the
//     reference shows, whether or not the caller set stream_options.
//     Upstreams are always asked for stream_options.include_usage.
//   - When the next chunk would cost more than the hold, it is not sent:
//     the upstream is cancelled, the whole hold is billed (what was
//     generated exceeds it), and the stream ends with the documented
//     credit-limit event ([StreamError]) and [DONE].
//   - When the client goes away ([StreamSession.Close] before the end, or
//     its context ends), the upstream is cancelled and what was generated
//     so far is billed: the prompt plus the output received.
//   - When the upstream fails after the first chunk, the stream ends with
//     an error event ({"error":{"message":"inference service
//     unavailable","type":"service_unavailable"}}, or "inference request
//     failed" with type "server_error") and [DONE], and what was delivered
//     is billed. If a finishing chunk had already arrived, the stream ends
//     normally instead, with the usage known or counted.
//
// Routing.
//   - Each model names its providers in order: the first is the primary,
//     the rest are fallbacks, all under the model's one upstream name.
//   - A provider is retried (2 attempts by default, exponential backoff
//     from 100ms with jitter) only for fault.Unavailable failures
//     (connection refused, timeouts, 5xx, 429, 408) and only before the
//     first byte reached the caller. A refusal (other 4xx) is not retried
//     on the same provider but falls back to the next: it may be that
//     provider's configuration.
//   - A circuit breaker per provider opens after 5 consecutive
//     unavailable failures, refuses for 30s, then lets one probe through;
//     the probe's success closes it, its failure reopens it. Refusals and
//     cancellations do not count. When every provider is skipped or failed,
//     the answer is 502 "inference service unavailable".
//   - Time-to-first-byte limits are per provider: 30s for a stream's first
//     chunk, 5 minutes for a whole non-streamed answer (its first byte).
//     [OpenAIConfig.Timeout] (10 minutes) bounds a whole upstream call.
//
// Errors carry fault codes with the documented messages: fault.Invalid
// (400; "invalid model '<id>'. Available models: a, b, c" with the ids
// joined by ", " in catalog order), fault.InsufficientFunds (402;
// [MsgInsufficientCredits]), fault.Unavailable (502; [MsgUnavailable]),
// fault.Upstream (500; [MsgFailed]), fault.Canceled when the caller went
// away, fault.Internal when the ledger failed.
// # Speech-to-text: decisions the API reference leaves open
//
// The reference bills SttInference but documents no route; the route is
// OpenAI's, so OpenAI clients work unmodified.
//   - The form is OpenAI's: file and model required; language, prompt,
//     response_format (json by default, text, srt, vtt, verbose_json),
//     temperature (0 to 1), timestamp_granularities[] (word, segment).
//     Other fields are ignored. A temperature of 0 is not sent upstream
//     (go-openai omits it); 0 is the API's default, so nothing changes. The answer is the provider's bytes (a text answer excepted: see below), with
//     Content-Type application/json (json, verbose_json), text/plain
//     (text, srt) or text/vtt.
//   - The file goes upstream under the client's base name with an
//     extension of the format it was read as ("blob" as "blob.webm", no
//     name as "audio.wav"): OpenAI's API tells the format by the
//     extension and refuses a name without a known one.
//   - GET /api/models lists the STT models after the chat models. Each
//     model has a type, "chat" or "stt"; an STT model's price is
//     pricing.cents_per_hour, its token prices 0 and its context 0. No
//     documented field changed.
//   - The audio's duration is read from the file before anything is
//     held: WAV, MP3, FLAC, Ogg Opus, WebM and M4A (package audio); any
//     other file is refused (400). Durations are computed without
//     overflow, and a file longer than 24 hours ([audio.MaxDuration]) is
//     refused (400 "could not read the audio file: the flac file is
//     longer than 24 hours"). Audio is billed in whole seconds, rounded
//     up, at the hourly price prorated per second, rounded up to the
//     micro-cent.
//   - What is billed is the duration the provider reports (verbose_json's
//     duration, or json's usage seconds as OpenAI reports them), at most
//     24 hours; when it reports none, the duration read from the file,
//     or for srt and vtt answers the end of their last cue if that is
//     later (the cues are the provider's timeline). A text answer is
//     asked of the provider as json, which every OpenAI-compatible
//     server speaks and which may report usage, and answered as its text
//     and a newline. A provider that reports nothing (no usage in json)
//     is billed the file's duration, which for FLAC, M4A and WebM is
//     the duration the container declares. The hold is sized from the file's duration
//     (its cost plus a tenth and a second, at least $0.05), but the
//     settlement is not capped by it: a container declares what its
//     uploader wrote, so a provider reporting more is billed what it
//     reports, the excess over the hold taken from the wallet's
//     available balance in the same atomic settlement
//     ([billing.Settlement] ExceedHold), still one SttInference entry.
//   - The balance never goes below zero. When the wallet's available
//     balance (less its other requests' holds) cannot cover what the
//     provider reports, the work is already done: the transcript is
//     returned, the wallet is charged everything it has available, and
//     the shortfall is logged (a warning with the account, the seconds
//     and the amounts). The request was not refused up front because
//     what a file holds is known only once it is transcribed: its
//     declared duration is the uploader's word. The loss is bounded by
//     the upload limit (25 MB) and the 24-hour cap.
//   - $0.05 ([MinimumHold]) is held before a byte of the upload is read
//     (over HTTP too: [Service.ReadAudio] takes the wallet, since OpenAI
//     clients send the file before the model), so a wallet's uploads in
//     flight are bounded by its balance; a longer file's cost is then held
//     in full, or the request refused with 402 and the documented
//     message. A failed or refused request costs nothing.
//   - An upload's first MiB is kept in memory, the rest in an unlinked
//     temporary file; those files hold at most MaxAudioSpool bytes at
//     once (4 GiB by default), past which an upload is refused with 429
//     "too many audio uploads in progress: retry later".
//   - Uploads over the limit (25 MB by default) answer 413 with "audio
//     file too large (max 25 MB)". An unknown model answers 400 listing
//     the STT models: "invalid model 'x'. Available STT models: a, b".
//     A provider's refusal is 500 "inference request failed", an
//     unreachable one 502 "inference service unavailable", as for chat.
package inference
