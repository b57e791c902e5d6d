// Package personas hosts conversational personas: a wallet creates a
// persona from a personality template and talks to it in sessions.
// Replies are generated in the background through the platform's
// inference service, under the same holds and billing as chat
// completions (ChatInference entries naming the persona), and delivered
// to every client of the session as events.
//
// # Replies
//
// Sending a message stores the user's message and a pending assistant
// message, in one transaction, and returns at once. Workers lease
// sessions with pending replies from the store (so that several
// processes on one database never work on one session at once) and
// generate each session's replies one at a time, in order. A reply
// streams token deltas as events while it is generated; it completes as a
// "complete" message, or a "failed" one (with the reason as its content)
// that never blocks the session. A reply survives its client going away;
// deleting the session cancels it.
//
// The history sent to the model is the persona's system prompt, its
// workspace files (notes and memory), and the session's messages, newest
// kept, within a budget (Options.ContextTokens: by default three quarters
// of the model's context, less the reply's MaxTokens). Tokens are counted
// as the inference service counts a prompt it checks against the model's
// context (o200k_base), so a history that fits the budget is never
// refused as too long. The system prompt takes at most half the budget
// (workspace files past it are cut, with a note saying so); the newest
// turns that fit follow, the latest always; the older ones are replaced
// by a summary the model writes of them (or a note that they are left
// out, if it cannot); and if the summary does not fit beside the kept
// turns, the oldest of those are dropped, then the summary. A session
// therefore never stops replying because its history grew.
//
// # Charges
//
// A reply is billed once, as a chat completion (a ChatInference entry
// "Chat: <model> (<in> in / <out> out tokens) · persona <name>"), even
// when the process writing it dies: the ID of the reply's ledger hold is
// recorded on the pending reply before the model is asked. A worker that
// takes over a reply left pending (once the dead worker's lease has
// passed: two minutes by default, Options.Lease; a live worker renews it
// every third of that while it writes, so a slow reply is never taken
// over) releases that hold first: if it was
// still open, nothing was billed, and the reply is written and billed
// anew; if it was resolved, the reply was billed, and it is written
// again without a charge. (A hold expires 15 minutes after it was
// placed: a reply whose worker died between its hold and its
// settlement, and that no worker took over within those minutes, is
// then written unbilled: a crash never bills twice, at worst once less.)
//
// The history summary is written with the model unbilled and billed only
// once the reply it was made for is complete, as its own ChatInference
// entry ("... · persona <name>, history summary"), at most once per reply
// (the ledger's idempotency key is the reply's ID), and at most what the
// wallet has left. A reply that fails before the model answers (a prompt
// over the context, no funds, no provider) costs nothing, nor does the
// summary made for it. A reply cut off while it streams (the provider
// failed, or its session was deleted) is billed for what was streamed to
// the session's clients, as a chat completion would be, but not its
// summary. A reply being written when its process stops is left pending
// for the next worker, which finishes it under the rules above.
//
// # Choices where the API reference is silent
//
//   - A persona is {"id","personality_id","name","created_at"}, a session
//     {"id","persona_id","name","created_at"}, a message
//     {"id","role","content","created_at","status"} with status
//     "complete", "pending" or "failed".
//   - Names are 1-100 characters; messages at most 32,000 characters; a
//     persona's workspace holds at most 32 files of at most 64 KiB each,
//     named by 1-100 characters of letters, digits, ".", "-" and "_".
//   - Messages are listed chronologically; "before" is a message ID, and
//     the page is the latest "limit" messages older than it (default 50,
//     at most 200), with "has_more".
//   - What a wallet stores is bounded by what it pays: a message is taken
//     only from a wallet with $0.05 available (402 otherwise, with chat's
//     message), and a session queues at most 8 replies (429: wait for
//     one to finish); a wallet holds at most 100 personas and a persona
//     1,000 sessions (400: delete one first). The limits are checked in
//     the store's write transaction, so processes sharing a database
//     cannot overshoot them together.
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
	// System is the system prompt the template contributes; it is kept
	// server-side.
	System string
}

// Persona is a wallet's instance of a personality.
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

// Message statuses.
const (
	StatusComplete = "complete"
	StatusPending  = "pending"
	StatusFailed   = "failed"
)

// Roles.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Message is one turn of a session.
type Message struct {
	ID        string
	SessionID string
	Role      string
	Content   string
	CreatedAt time.Time
	Status    string
	// Seq orders a session's messages (the order they were written).
	Seq int64
	// Charge is, for a reply, the ledger hold of the attempt that is
	// writing it (set by SetReplyCharge before the model is asked);
	// internal, never shown. See "Charges" in the package doc.
	Charge string
}

// Key is a message's position in a list (page.Key): newest first by Seq.
func Key(m Message) page.Key { return page.Key{Order: m.Seq, ID: m.ID} }

// File is a persona's workspace file.
type File struct {
	Name      string
	Content   string
	UpdatedAt time.Time
}

// Reply is a pending assistant message and the session it belongs to.
type Reply struct {
	SessionID string
	Message   Message
}

// Store keeps personas, sessions, messages and workspace files.
//
// The create methods and Send take a limit, checked in the same
// transaction as the write (so processes sharing a database cannot
// overshoot it together): past it they refuse with fault.Invalid
// (CreatePersona, CreateSession) or fault.RateLimited (Send), the
// message being the caller's to set; a limit <= 0 means none.
type Store interface {
	// CreatePersona stores a persona, unless its account already has
	// maxPerAccount.
	CreatePersona(ctx context.Context, p Persona, maxPerAccount int) error
	// GetPersona returns a persona, or fault.NotFound.
	GetPersona(ctx context.Context, id string) (Persona, error)
	// ListPersonas returns the account's personas, oldest first.
	ListPersonas(ctx context.Context, account string) ([]Persona, error)
	// DeletePersona deletes the persona with its sessions, messages and
	// files, for good; fault.NotFound if the account has no such persona.
	DeletePersona(ctx context.Context, account, id string) error

	// CreateSession stores a session, unless its persona already has
	// maxPerPersona.
	CreateSession(ctx context.Context, s Session, maxPerPersona int) error
	// GetSession returns a session of the persona, or fault.NotFound.
	GetSession(ctx context.Context, personaID, id string) (Session, error)
	// SessionByID returns a session, or fault.NotFound.
	SessionByID(ctx context.Context, id string) (Session, error)
	// ListSessions returns the persona's sessions, oldest first.
	ListSessions(ctx context.Context, personaID string) ([]Session, error)
	// DeleteSession deletes the session and its messages;
	// fault.NotFound if the persona has no such session.
	DeleteSession(ctx context.Context, personaID, id string) error

	// Send appends the user's message and a pending assistant message
	// after it, in one transaction, assigning their Seq, unless the
	// session already has maxPending pending replies.
	Send(ctx context.Context, user, reply Message, maxPending int) (Message, Message, error)
	// ListMessages returns a page of the session's messages, newest first
	// by Seq (see Key).
	ListMessages(ctx context.Context, sessionID string, p page.Request) (page.Page[Message], error)
	// FinishReply sets a pending message's content and final status;
	// fault.NotFound if it is gone (its session was deleted).
	FinishReply(ctx context.Context, id, content, status string, at time.Time) (Message, error)

	// LeaseSessions returns up to limit sessions with a pending reply
	// whose lease has passed, leasing them until now+lease: one worker
	// at a time per session, in any process.
	LeaseSessions(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]string, error)
	// NextReply returns the session's oldest pending reply, or
	// fault.NotFound when there is none.
	NextReply(ctx context.Context, sessionID string) (Message, error)
	// SetReplyCharge records charge on a pending reply; fault.NotFound if
	// it is no longer pending (or gone).
	SetReplyCharge(ctx context.Context, id, charge string) error
	// RenewLease extends the session's lease to until, while its worker
	// is still writing its replies.
	RenewLease(ctx context.Context, sessionID string, until time.Time) error
	// ReleaseSession ends the session's lease.
	ReleaseSession(ctx context.Context, sessionID string) error

	// PutFile writes a workspace file; fault.Invalid past the limits of
	// count (maxFiles).
	PutFile(ctx context.Context, personaID string, f File, maxFiles int) error
	// GetFile returns a file, or fault.NotFound.
	GetFile(ctx context.Context, personaID, name string) (File, error)
	// ListFiles returns the persona's files by name.
	ListFiles(ctx context.Context, personaID string) ([]File, error)
	// DeleteFile deletes a file; fault.NotFound if there is none.
	DeleteFile(ctx context.Context, personaID, name string) error
}
