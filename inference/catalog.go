package inference

import (
	"fmt"
	"strings"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// Model is a catalog entry: what GET /api/models shows, plus how the model
// is served.
type Model struct {
	// ID is what requests name, e.g. "moonshotai/kimi-k2.6".
	ID string
	// Name is the display name; empty means ID.
	Name string
	// Created is a Unix time in seconds.
	Created int64
	// OwnedBy defaults to "perceptron".
	OwnedBy string
	// ContextLength is the maximum of prompt plus output tokens.
	ContextLength uint32
	// MaxOutputTokens is the maximum output per request.
	MaxOutputTokens uint32
	// FrontierRank ranks capability, lower is more capable.
	FrontierRank uint32
	// InputCentsPer1M and OutputCentsPer1M are prices in cents per million
	// tokens, that is micro-cents per token.
	InputCentsPer1M  int64
	OutputCentsPer1M int64
	// FunctionCalling says whether tools and tool_choice are accepted.
	FunctionCalling bool
	// Providers names the providers that serve the model, in order: the
	// first is the primary, the rest are fallbacks.
	Providers []string
	// UpstreamModel is the name the providers know the model by; empty
	// means ID. Every provider of the model gets the same name.
	UpstreamModel string
}

// InputPrice is the price of one prompt token.
func (m Model) InputPrice() billing.MicroCents { return billing.MicroCents(m.InputCentsPer1M) }

// OutputPrice is the price of one output token.
func (m Model) OutputPrice() billing.MicroCents { return billing.MicroCents(m.OutputCentsPer1M) }

// Cost is the exact price of in prompt and out output tokens.
func (m Model) Cost(in, out int64) billing.MicroCents {
	return billing.MicroCents(in)*m.InputPrice() + billing.MicroCents(out)*m.OutputPrice()
}

// upstreamName is the model name sent to providers.
func (m Model) upstreamName() string {
	if m.UpstreamModel != "" {
		return m.UpstreamModel
	}
	return m.ID
}

// Catalog is the immutable, ordered list of models offered. It is safe for
// concurrent use.
type Catalog struct {
	models    []Model
	byID      map[string]int
	available string // "a, b, c"
}

// NewCatalog checks the models and returns a catalog listing them in the
// given order. Name defaults to ID, OwnedBy to "perceptron".
func NewCatalog(models ...Model) (*Catalog, error) {
	c := &Catalog{byID: make(map[string]int, len(models))}
	ids := make([]string, 0, len(models))
	for i, m := range models {
		_, dup := c.byID[m.ID]
		switch {
		case m.ID == "":
			return nil, fmt.Errorf("inference: catalog model %d has no ID", i)
		case dup:
			return nil, fmt.Errorf("inference: catalog model %q listed twice", m.ID)
		case m.ContextLength == 0 || m.MaxOutputTokens == 0:
			return nil, fmt.Errorf("inference: model %q needs ContextLength and MaxOutputTokens", m.ID)
		case m.MaxOutputTokens > m.ContextLength:
			return nil, fmt.Errorf("inference: model %q: MaxOutputTokens exceeds ContextLength", m.ID)
		case m.InputCentsPer1M < 0 || m.OutputCentsPer1M < 0:
			return nil, fmt.Errorf("inference: model %q has a negative price", m.ID)
		case len(m.Providers) == 0:
			return nil, fmt.Errorf("inference: model %q has no provider", m.ID)
		}
		if m.Name == "" {
			m.Name = m.ID
		}
		if m.OwnedBy == "" {
			m.OwnedBy = "perceptron"
		}
		m.Providers = append([]string(nil), m.Providers...)
		c.byID[m.ID] = len(c.models)
		c.models = append(c.models, m)
		ids = append(ids, m.ID)
	}
	c.available = strings.Join(ids, ", ")
	return c, nil
}

// Lookup returns the model with the given ID, or fault.Invalid with the
// documented message "invalid model '<id>'. Available models: a, b, c".
func (c *Catalog) Lookup(id string) (Model, error) {
	if i, ok := c.byID[id]; ok {
		return c.models[i], nil
	}
	return Model{}, fault.Newf(fault.Invalid, "invalid model '%s'. Available models: %s", id, c.available)
}

// Models returns the models in catalog order.
func (c *Catalog) Models() []Model {
	out := make([]Model, len(c.models))
	for i, m := range c.models {
		m.Providers = append([]string(nil), m.Providers...)
		out[i] = m
	}
	return out
}

// ModelList is the body of GET /api/models (and GET /api/v1/models, which
// OpenAI clients' models.list() reads).
type ModelList struct {
	Object string      `json:"object"`
	Data   []ModelInfo `json:"data"`
}

// ModelInfo is one model of a [ModelList].
type ModelInfo struct {
	ID              string  `json:"id"`
	Name            string  `json:"name"`
	Object          string  `json:"object"`
	Created         int64   `json:"created"`
	OwnedBy         string  `json:"owned_by"`
	ContextLength   uint32  `json:"context_length"`
	MaxOutputTokens uint32  `json:"max_output_tokens"`
	FrontierRank    uint32  `json:"frontier_rank"`
	Pricing         Pricing `json:"pricing"`
	// Type tells chat models ("chat") from speech-to-text ones ("stt"):
	// beyond the reference, which lists chat models only.
	Type string `json:"type"`
}

// Pricing is a model's price: chat models in cents per million tokens,
// speech-to-text models in cents per hour of audio (CentsPerHour, billed
// per second; their token prices are 0).
type Pricing struct {
	InputCentsPer1M  int64 `json:"input_cents_per_1m"`
	OutputCentsPer1M int64 `json:"output_cents_per_1m"`
	CentsPerHour     int64 `json:"cents_per_hour,omitempty"`
}

// List returns the catalog in the documented GET /api/models shape.
func (c *Catalog) List() ModelList {
	l := ModelList{Object: "list", Data: make([]ModelInfo, len(c.models))}
	for i, m := range c.models {
		l.Data[i] = ModelInfo{
			ID:              m.ID,
			Name:            m.Name,
			Object:          "model",
			Created:         m.Created,
			OwnedBy:         m.OwnedBy,
			ContextLength:   m.ContextLength,
			MaxOutputTokens: m.MaxOutputTokens,
			FrontierRank:    m.FrontierRank,
			Pricing:         Pricing{InputCentsPer1M: m.InputCentsPer1M, OutputCentsPer1M: m.OutputCentsPer1M},
			Type:            "chat",
		}
	}
	return l
}
