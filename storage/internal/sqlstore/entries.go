package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
)

// entryCols are the columns scanEntry reads after seq.
const entryCols = `id, account, type, status, amount, balance_after, description, chain_id, tx_hash, model, input_tokens, output_tokens, idempotency_key, created_at`

// Entries is billing.Ledger.Entries for either SQL backend, read through
// q (a backend keeps the rest of its ledger to itself, and SQLite first
// writes its journaled settlements into the table).
func Entries(ctx context.Context, q Querier, d Dialect, account string, f billing.EntryFilter, p page.Request) (page.Page[billing.Entry], error) {
	none := page.Page[billing.Entry]{}
	account, err := billrules.Account(account)
	if err != nil {
		return none, err
	}
	size := p.Size(billing.EntriesPageSize, billing.EntriesPageMax)
	query, args := EntriesQuery(account, f, p.After, size+1)
	return readPage(ctx, q, d, "entries", query, args, size, scanEntry, billing.EntryKey)
}

// EntriesQuery is the query of Entries: at most limit entries older than
// after, newest first, reading entries_account_seq. A lower bound on time
// becomes a lower bound on seq too, found in entries_account_created:
// every entry at or after f.Since has a seq at least the least seq among
// them, so the scan in seq order stops there instead of running to the
// account's first entry. (Seq is unique, so the key's ID never breaks a
// tie.)
func EntriesQuery(account string, f billing.EntryFilter, after page.Key, limit int) (string, []any) {
	var b strings.Builder
	args := []any{account}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	b.WriteString(`SELECT seq, ` + entryCols + ` FROM entries WHERE account = $1`)
	if !f.Since.IsZero() {
		since := arg(f.Since.UnixMicro())
		fmt.Fprintf(&b, ` AND created_at >= %s AND seq >= (SELECT min(seq) FROM entries WHERE account = $1 AND created_at >= %s)`, since, since)
	}
	if !f.Until.IsZero() {
		b.WriteString(` AND created_at < ` + arg(f.Until.UnixMicro()))
	}
	if len(f.Types) > 0 {
		types := make([]string, len(f.Types))
		for i, t := range f.Types {
			types[i] = arg(string(t))
		}
		b.WriteString(` AND type IN (` + strings.Join(types, ", ") + `)`)
	}
	if !after.IsZero() {
		b.WriteString(` AND seq < ` + arg(after.Order))
	}
	b.WriteString(` ORDER BY seq DESC LIMIT ` + arg(limit))
	return b.String(), args
}

// scanEntry reads seq and entryCols.
func scanEntry(r Row) (billing.Entry, error) {
	var (
		e                        billing.Entry
		typ, status              string
		amount, after, chain, at int64
		in, out                  int64
		txHash, model, key       *string
	)
	if err := r.Scan(&e.Seq, &e.ID, &e.Account, &typ, &status, &amount, &after, &e.Description, &chain, &txHash, &model, &in, &out, &key, &at); err != nil {
		return billing.Entry{}, err
	}
	e.Type, e.Status = billing.TxType(typ), billing.TxStatus(status)
	e.Amount, e.BalanceAfter = billing.MicroCents(amount), billing.MicroCents(after)
	e.ChainID = uint64(chain)
	if txHash != nil {
		e.TxHash = *txHash
	}
	if model != nil {
		e.Usage = &billing.Usage{Model: *model, InputTokens: in, OutputTokens: out}
	}
	if key != nil {
		e.IdempotencyKey = *key
	}
	e.CreatedAt = time.UnixMicro(at).UTC()
	return e, nil
}
