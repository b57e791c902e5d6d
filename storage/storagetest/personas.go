package storagetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/personas"
)

// TestPersonaStore runs the personas.Store part of the suite.
func TestPersonaStore(t *testing.T, f Factory) {
	t.Run("CRUDAndCascade", func(t *testing.T) { testPersonasCRUD(t, f) })
	t.Run("MessagesAndReplies", func(t *testing.T) { testPersonasMessages(t, f) })
	t.Run("LeaseRace", func(t *testing.T) { testPersonasLeaseRace(t, f) })
	t.Run("Files", func(t *testing.T) { testPersonasFiles(t, f) })
	t.Run("Limits", func(t *testing.T) { testPersonasLimits(t, f) })
	t.Run("ReplyCharge", func(t *testing.T) { testPersonasReplyCharge(t, f) })
	t.Run("Crash", func(t *testing.T) { testPersonasCrash(t, f) })
	t.Run("SlowReply", func(t *testing.T) { testPersonasSlowReply(t, f) })
}

// A pending reply records the hold of the attempt writing it, read back
// with the reply; a finished or missing reply refuses it.
func testPersonasReplyCharge(t *testing.T, f Factory) {
	ps := as[personas.Store](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	require.NoError(t, ps.CreateSession(ctx, personas.Session{ID: "s", PersonaID: "p", Name: "n", CreatedAt: t0}, 0))
	_, r, err := ps.Send(ctx,
		personas.Message{ID: "u", SessionID: "s", Role: "user", Content: "hi", Status: personas.StatusComplete, CreatedAt: t0},
		personas.Message{ID: "r", SessionID: "s", Role: "assistant", Status: personas.StatusPending, CreatedAt: t0}, 0)
	require.NoError(t, err)
	require.Empty(t, r.Charge)
	require.NoError(t, ps.SetReplyCharge(ctx, "r", "hold-1"))
	require.NoError(t, ps.SetReplyCharge(ctx, "r", "hold-2"))
	next, err := ps.NextReply(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, "hold-2", next.Charge)
	done, err := ps.FinishReply(ctx, "r", "hello", personas.StatusComplete, t0)
	require.NoError(t, err)
	require.Equal(t, "hold-2", done.Charge)
	billRequireCode(t, ps.SetReplyCharge(ctx, "r", "hold-3"), fault.NotFound)
	billRequireCode(t, ps.SetReplyCharge(ctx, "missing", "hold-3"), fault.NotFound)

	// A renewed lease keeps other workers off the session until it passes.
	ids, err := ps.LeaseSessions(ctx, t0, time.Minute, 10)
	require.NoError(t, err)
	require.Empty(t, ids, "nothing pending")
	_, _, err = ps.Send(ctx,
		personas.Message{ID: "u2", SessionID: "s", Role: "user", Content: "hi", Status: personas.StatusComplete, CreatedAt: t0},
		personas.Message{ID: "r2", SessionID: "s", Role: "assistant", Status: personas.StatusPending, CreatedAt: t0}, 0)
	require.NoError(t, err)
	ids, err = ps.LeaseSessions(ctx, t0, time.Minute, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"s"}, ids)
	require.NoError(t, ps.RenewLease(ctx, "s", t0.Add(3*time.Minute)))
	ids, err = ps.LeaseSessions(ctx, t0.Add(2*time.Minute), time.Minute, 10)
	require.NoError(t, err)
	require.Empty(t, ids, "renewed")
	ids, err = ps.LeaseSessions(ctx, t0.Add(3*time.Minute), time.Minute, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"s"}, ids, "the renewed lease passed")
}

// The limits of CreatePersona, CreateSession and Send hold when 8
// writers on two handles race past them: exactly the limit is written,
// the others refused with their codes; a finished reply makes room.
func testPersonasLimits(t *testing.T, f Factory) {
	open := f(t)
	h := [2]personas.Store{as[personas.Store](t, open(t)), as[personas.Store](t, open(t))}
	ctx := t.Context()
	t0 := billT0()
	a := billAddr(7)
	race := func(n int, try func(i int, st personas.Store) error) (ok int, refused []error) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				err := try(i, h[i%2])
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					ok++
				} else {
					refused = append(refused, err)
				}
			})
		}
		wg.Wait()
		return ok, refused
	}
	ok, refused := race(8, func(i int, st personas.Store) error {
		return st.CreatePersona(ctx, personas.Persona{ID: fmt.Sprintf("lp%d", i), Account: a, PersonalityID: "jensen", Name: "n", CreatedAt: t0}, 3)
	})
	require.Equal(t, 3, ok)
	for _, err := range refused {
		billRequireCode(t, err, fault.Invalid)
	}
	list, err := h[0].ListPersonas(ctx, a)
	require.NoError(t, err)
	require.Len(t, list, 3)
	require.NoError(t, h[1].CreatePersona(ctx, personas.Persona{ID: "other", Account: billAddr(8), PersonalityID: "jensen", Name: "n", CreatedAt: t0}, 3),
		"another wallet has its own limit")

	ok, refused = race(8, func(i int, st personas.Store) error {
		return st.CreateSession(ctx, personas.Session{ID: fmt.Sprintf("ls%d", i), PersonaID: "lp-x", Name: "n", CreatedAt: t0}, 2)
	})
	require.Equal(t, 2, ok)
	for _, err := range refused {
		billRequireCode(t, err, fault.Invalid)
	}
	ss, err := h[0].ListSessions(ctx, "lp-x")
	require.NoError(t, err)
	require.Len(t, ss, 2)

	sid := ss[0].ID
	ok, refused = race(8, func(i int, st personas.Store) error {
		_, _, err := st.Send(ctx, personas.Message{ID: fmt.Sprintf("lu%d", i), SessionID: sid, Role: "user", Status: personas.StatusComplete, CreatedAt: t0},
			personas.Message{ID: fmt.Sprintf("lr%d", i), SessionID: sid, Role: "assistant", Status: personas.StatusPending, CreatedAt: t0}, 3)
		return err
	})
	require.Equal(t, 3, ok)
	for _, err := range refused {
		billRequireCode(t, err, fault.RateLimited)
	}
	next, err := h[0].NextReply(ctx, sid)
	require.NoError(t, err)
	_, err = h[1].FinishReply(ctx, next.ID, "done", personas.StatusComplete, t0)
	require.NoError(t, err)
	_, _, err = h[1].Send(ctx, personas.Message{ID: "lu-after", SessionID: sid, Role: "user", Status: personas.StatusComplete, CreatedAt: t0},
		personas.Message{ID: "lr-after", SessionID: sid, Role: "assistant", Status: personas.StatusPending, CreatedAt: t0}, 3)
	require.NoError(t, err, "a finished reply makes room")
}

func testPersonasCRUD(t *testing.T, f Factory) {
	ps := as[personas.Store](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	p1 := personas.Persona{ID: "p1", Account: a, PersonalityID: "jensen", Name: "My Jensen", CreatedAt: t0}
	p2 := personas.Persona{ID: "p2", Account: a, PersonalityID: "mentor", Name: "Mentor", CreatedAt: t0.Add(time.Second)}
	require.NoError(t, ps.CreatePersona(ctx, p1, 0))
	require.NoError(t, ps.CreatePersona(ctx, p2, 0))
	require.NoError(t, ps.CreatePersona(ctx, personas.Persona{ID: "p3", Account: b, PersonalityID: "coach", Name: "B's", CreatedAt: t0}, 0))
	got, err := ps.GetPersona(ctx, "p1")
	require.NoError(t, err)
	billRequireTime(t, t0, got.CreatedAt)
	got.CreatedAt = t0
	require.Equal(t, p1, got)
	list, err := ps.ListPersonas(ctx, a)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "p1", list[0].ID)
	_, err = ps.GetPersona(ctx, "nope")
	billRequireCode(t, err, fault.NotFound)

	require.NoError(t, ps.CreateSession(ctx, personas.Session{ID: "s1", PersonaID: "p1", Name: "Evening", CreatedAt: t0}, 0))
	require.NoError(t, ps.CreateSession(ctx, personas.Session{ID: "s2", PersonaID: "p1", Name: "Morning", CreatedAt: t0.Add(time.Second)}, 0))
	ss, err := ps.ListSessions(ctx, "p1")
	require.NoError(t, err)
	require.Len(t, ss, 2)
	_, err = ps.GetSession(ctx, "p2", "s1")
	billRequireCode(t, err, fault.NotFound)
	byID, err := ps.SessionByID(ctx, "s1")
	require.NoError(t, err)
	require.Equal(t, "p1", byID.PersonaID)
	_, _, err = ps.Send(ctx, personas.Message{ID: "m1", SessionID: "s1", Role: "user", Content: "hi", Status: "complete", CreatedAt: t0},
		personas.Message{ID: "m2", SessionID: "s1", Role: "assistant", Status: "pending", CreatedAt: t0}, 0)
	require.NoError(t, err)
	require.NoError(t, ps.PutFile(ctx, "p1", personas.File{Name: "notes.md", Content: "x", UpdatedAt: t0}, 32))

	billRequireCode(t, ps.DeleteSession(ctx, "p2", "s2"), fault.NotFound)
	require.NoError(t, ps.DeleteSession(ctx, "p1", "s2"))
	billRequireCode(t, ps.DeletePersona(ctx, b, "p1"), fault.NotFound) // not b's
	require.NoError(t, ps.DeletePersona(ctx, a, "p1"))
	_, err = ps.GetPersona(ctx, "p1")
	billRequireCode(t, err, fault.NotFound)
	_, err = ps.GetSession(ctx, "p1", "s1")
	billRequireCode(t, err, fault.NotFound)
	p, err := ps.ListMessages(ctx, "s1", page.Request{})
	require.NoError(t, err)
	require.Empty(t, p.Items, "messages go with the persona")
	files, err := ps.ListFiles(ctx, "p1")
	require.NoError(t, err)
	require.Empty(t, files)
	_, err = ps.NextReply(ctx, "s1")
	billRequireCode(t, err, fault.NotFound)
}

func testPersonasMessages(t *testing.T, f Factory) {
	ps := as[personas.Store](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	require.NoError(t, ps.CreateSession(ctx, personas.Session{ID: "s", PersonaID: "p", Name: "n", CreatedAt: t0}, 0))
	_, _, err := ps.Send(ctx, personas.Message{ID: "x", SessionID: "missing", Role: "user"}, personas.Message{ID: "y", SessionID: "missing", Role: "assistant"}, 0)
	billRequireCode(t, err, fault.NotFound)
	var replies []personas.Message
	for i := range 10 {
		u, r, err := ps.Send(ctx,
			personas.Message{ID: fmt.Sprintf("u%d", i), SessionID: "s", Role: "user", Content: fmt.Sprint("hello ", i), Status: personas.StatusComplete, CreatedAt: t0}, // one timestamp for all
			personas.Message{ID: fmt.Sprintf("r%d", i), SessionID: "s", Role: "assistant", Status: personas.StatusPending, CreatedAt: t0}, 0)
		require.NoError(t, err)
		require.Less(t, u.Seq, r.Seq)
		replies = append(replies, r)
	}
	// Pending replies come oldest first; finishing one moves to the next.
	next, err := ps.NextReply(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, "r0", next.ID)
	done, err := ps.FinishReply(ctx, "r0", "an answer", personas.StatusComplete, t0.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, "an answer", done.Content)
	require.Equal(t, personas.StatusComplete, done.Status)
	_, err = ps.FinishReply(ctx, "r0", "again", personas.StatusFailed, t0)
	billRequireCode(t, err, fault.NotFound) // no longer pending
	next, err = ps.NextReply(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, "r1", next.ID)

	// Pages, newest first by Seq, strictly older than a message.
	var all []string
	r := page.Request{Limit: 3}
	for {
		p, err := ps.ListMessages(ctx, "s", r)
		require.NoError(t, err)
		for _, m := range p.Items {
			all = append(all, m.ID)
		}
		if !p.More {
			break
		}
		r.After = p.Next
	}
	require.Len(t, all, 20)
	require.Equal(t, "r9", all[0])
	require.Equal(t, "u0", all[19])
	_ = replies
}

// Sessions are leased by one worker at a time, on any handle.
func testPersonasLeaseRace(t *testing.T, f Factory) {
	open := f(t)
	h := [2]personas.Store{as[personas.Store](t, open(t)), as[personas.Store](t, open(t))}
	ctx := t.Context()
	t0 := billT0()
	for i := range 30 {
		id := fmt.Sprintf("s%02d", i)
		require.NoError(t, h[0].CreateSession(ctx, personas.Session{ID: id, PersonaID: "p", Name: "n", CreatedAt: t0}, 0))
		_, _, err := h[0].Send(ctx, personas.Message{ID: id + "u", SessionID: id, Role: "user", Status: "complete", CreatedAt: t0},
			personas.Message{ID: id + "r", SessionID: id, Role: "assistant", Status: "pending", CreatedAt: t0}, 0)
		require.NoError(t, err)
	}
	require.NoError(t, h[0].CreateSession(ctx, personas.Session{ID: "idle", PersonaID: "p", Name: "n", CreatedAt: t0}, 0))
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for {
				got, err := h[w%2].LeaseSessions(ctx, t0, time.Hour, 4)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, id := range got {
					seen[id]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, 30, "the idle session has no pending reply")
	for id, n := range seen {
		require.Equal(t, 1, n, id)
	}
	// Released, it can be leased again.
	require.NoError(t, h[1].ReleaseSession(ctx, "s00"))
	got, err := h[0].LeaseSessions(ctx, t0, time.Hour, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"s00"}, got)
	got, err = h[0].LeaseSessions(ctx, t0.Add(2*time.Hour), time.Hour, 100)
	require.NoError(t, err)
	require.Len(t, got, 30, "leases end")
}

func testPersonasFiles(t *testing.T, f Factory) {
	ps := as[personas.Store](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	for i := range 3 {
		require.NoError(t, ps.PutFile(ctx, "p", personas.File{Name: fmt.Sprintf("f%d.md", i), Content: "v1", UpdatedAt: t0}, 3))
	}
	billRequireCode(t, ps.PutFile(ctx, "p", personas.File{Name: "f3.md", Content: "x", UpdatedAt: t0}, 3), fault.Invalid)
	require.NoError(t, ps.PutFile(ctx, "p", personas.File{Name: "f1.md", Content: "v2", UpdatedAt: t0.Add(time.Second)}, 3), "overwrite at the limit")
	got, err := ps.GetFile(ctx, "p", "f1.md")
	require.NoError(t, err)
	require.Equal(t, "v2", got.Content)
	billRequireTime(t, t0.Add(time.Second), got.UpdatedAt)
	files, err := ps.ListFiles(ctx, "p")
	require.NoError(t, err)
	require.Len(t, files, 3)
	require.Equal(t, "f0.md", files[0].Name)
	require.NoError(t, ps.DeleteFile(ctx, "p", "f0.md"))
	billRequireCode(t, ps.DeleteFile(ctx, "p", "f0.md"), fault.NotFound)
	_, err = ps.GetFile(ctx, "p", "f0.md")
	billRequireCode(t, err, fault.NotFound)
}
