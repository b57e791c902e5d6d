// Package personas will host conversational personas built from
// personality templates, with sessions, paginated message history and
// asynchronous replies delivered over a WebSocket.
//
// Not implemented yet: this package holds the types and interfaces the
// rest of the SDK is shaped around. Nothing here answers messages.
package personas

import (
	"context"
	"time"

	"github.com/perceptron-cloud/perceptron/page"
)

// Personality is a template personas are created from.
type Personality struct {
	ID          string
	Name        string
	Description string
	// System is the system prompt the template contributes.
	System string
}

// Persona is a user's instance of a personality.
type Persona struct {
	ID            string
	Account       string
	PersonalityID string
	Name          string
	CreatedAt     time.Time
}

// Session is one conversation with a persona.
type Session struct {
	ID        string
	PersonaID string
	Name      string
	CreatedAt time.Time
}

// Message is one turn of a session.
type Message struct {
	ID        string
	SessionID string
	Role      string // "user" or "assistant"
	Content   string
	CreatedAt time.Time
}

// Store keeps personas, sessions and messages. Deleting a persona deletes
// its sessions and messages. Message pages are package page's: newest
// first, keyed by (CreatedAt in Unix microseconds, ID), strictly older
// than the request's key (a message's own key, for "before a message").
type Store interface {
	CreatePersona(ctx context.Context, p Persona) error
	GetPersona(ctx context.Context, id string) (Persona, error)
	ListPersonas(ctx context.Context, account string) ([]Persona, error)
	DeletePersona(ctx context.Context, account, id string) error
	CreateSession(ctx context.Context, s Session) error
	ListSessions(ctx context.Context, personaID string) ([]Session, error)
	DeleteSession(ctx context.Context, personaID, id string) error
	AppendMessage(ctx context.Context, m Message) error
	ListMessages(ctx context.Context, sessionID string, p page.Request) (page.Page[Message], error)
}
