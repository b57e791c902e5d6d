package feeds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/perceptron-cloud/perceptron/inference"
)

// Limits of an enriched item.
const (
	MaxHeadlineWords = 15
	MaxSummaryWords  = 40
)

// enrichPrompt is the system message of an enrichment.
const enrichPrompt = `You edit a news feed for software agents. For the item the user sends, answer a JSON object with exactly three string fields:
"headline": a headline of at most 15 words;
"summary": a summary of at most 40 words, in one or two sentences, stating facts from the item only;
"category": exactly one of: %s.
The user's message holds the item and a draft, as "key: value" lines; improve the draft. Answer the JSON object only.`

// errUnreadable is an answer that is not the JSON asked for.
var errUnreadable = errors.New("the model's answer is not the JSON object asked for")

// enrichment is a model's answer.
type enrichment struct {
	Headline string `json:"headline"`
	Summary  string `json:"summary"`
	Category string `json:"category"`
}

// enrichRequest is the request for raw's headline, summary and category:
// the draft is the title, the content and the source's first tag that
// names a category.
func enrichRequest(model string, raw RawItem, maxTokens uint64, strict bool) *inference.ChatRequest {
	ids := make([]string, 0, 7)
	for _, c := range Categories() {
		ids = append(ids, c.ID)
	}
	sys := fmt.Sprintf(enrichPrompt, strings.Join(ids, ", "))
	if strict {
		sys += "\nYour previous answer was not valid: answer only the JSON object, with a category from the list."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "source: %s\n", oneLine(raw.Source))
	fmt.Fprintf(&b, "title: %s\n", oneLine(raw.Title))
	fmt.Fprintf(&b, "text: %s\n", oneLine(cutWords(raw.Content, 400)))
	fmt.Fprintf(&b, "headline: %s\n", oneLine(raw.Title))
	fmt.Fprintf(&b, "summary: %s\n", oneLine(cutWords(firstNonEmpty(raw.Content, raw.Title), MaxSummaryWords)))
	fmt.Fprintf(&b, "category: %s\n", draftCategory(raw))
	temp := 0.2
	return &inference.ChatRequest{
		Model:          model,
		Messages:       []inference.Message{{Role: inference.RoleSystem, Content: sys}, {Role: inference.RoleUser, Content: b.String()}},
		Temperature:    &temp,
		MaxTokens:      maxTokens,
		ResponseFormat: json.RawMessage(`{"type":"json_object"}`),
	}
}

// draftCategory is the first of the raw item's tags that names a category.
func draftCategory(raw RawItem) string {
	for _, t := range raw.Tags {
		if id, ok := matchCategory(t); ok {
			return id
		}
	}
	return ""
}

// matchCategory maps a category's ID, name or a near form ("Tech",
// "cryptocurrency", " Sports ") to its ID.
func matchCategory(s string) (string, bool) {
	s = strings.ToLower(strings.Trim(strings.TrimSpace(s), `."'`))
	if s == "" {
		return "", false
	}
	for _, c := range Categories() {
		if s == c.ID || s == strings.ToLower(c.Name) {
			return c.ID, true
		}
	}
	aliases := map[string]string{
		"tech": "technology", "software": "technology", "ai": "technology", "science": "technology",
		"cryptocurrency": "crypto", "bitcoin": "crypto", "blockchain": "crypto", "web3": "crypto",
		"economy": "economics", "markets": "economics", "finance": "economics", "business": "economics",
		"regulation": "regulatory", "law": "regulatory", "legal": "regulatory", "policy": "regulatory",
		"government": "politics", "elections": "politics", "world": "politics",
		"culture": "entertainment", "media": "entertainment", "music": "entertainment", "film": "entertainment",
		"sport": "sports", "football": "sports", "soccer": "sports",
	}
	if id, ok := aliases[s]; ok {
		return id, true
	}
	return "", false
}

// parseEnrichment reads and checks an answer: an over-long headline or
// summary is cut at a word boundary, a category is matched by name; an
// answer that is not the JSON asked for, or whose category matches none,
// is an error (asked again).
func parseEnrichment(text string) (enrichment, error) {
	text = strings.TrimSpace(text)
	// Models sometimes fence JSON in Markdown.
	text = strings.TrimPrefix(strings.TrimSuffix(text, "```"), "```json")
	text = strings.TrimSpace(strings.TrimPrefix(text, "```"))
	var e enrichment
	if err := json.Unmarshal([]byte(text), &e); err != nil {
		return enrichment{}, fmt.Errorf("%w: %v", errUnreadable, err)
	}
	e.Headline = cutWords(oneLine(e.Headline), MaxHeadlineWords)
	e.Summary = cutWords(oneLine(e.Summary), MaxSummaryWords)
	if e.Headline == "" || e.Summary == "" {
		return enrichment{}, fmt.Errorf("%w: an empty headline or summary", errUnreadable)
	}
	id, ok := matchCategory(e.Category)
	if !ok {
		return enrichment{}, fmt.Errorf("%w: category %q is not on the list", errUnreadable, e.Category)
	}
	e.Category = id
	return e, nil
}

// cutWords keeps the first n words of s, joined by single spaces.
func cutWords(s string, n int) string {
	w := strings.Fields(s)
	if len(w) > n {
		w = w[:n]
	}
	return strings.Join(w, " ")
}

// WordCount is the number of whitespace-separated words in s.
func WordCount(s string) int { return len(strings.Fields(s)) }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func firstNonEmpty(a, b string) string {
	if strings.TrimSpace(a) != "" {
		return a
	}
	return b
}

// enrich asks the model for raw's enrichment, once more with a stricter
// prompt after an unreadable answer. A model failure (down, refusing) is
// returned as it is, for a later retry.
func enrich(ctx context.Context, model inference.ModelProvider, modelID string, raw RawItem, maxTokens uint64) (enrichment, error) {
	var last error
	for attempt := range 2 {
		resp, err := model.ChatCompletion(ctx, enrichRequest(modelID, raw, maxTokens, attempt > 0))
		if err != nil {
			return enrichment{}, err
		}
		if len(resp.Choices) == 0 {
			last = fmt.Errorf("%w: no choices", errUnreadable)
			continue
		}
		e, err := parseEnrichment(resp.Choices[0].Message.Content)
		if err == nil {
			return e, nil
		}
		last = err
	}
	return enrichment{}, last
}
