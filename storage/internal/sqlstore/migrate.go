package sqlstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// migrationFS holds the migrations both SQL backends share, written once
// as templates of the dialect's Types ({{.BigInt}}, {{.Bool}}, ...). New
// tables go here; the backends' own migrations are the schemas from
// before the shared layer, kept as they were applied.
//
//go:embed migrations
var migrationFS embed.FS

// Types are the column types and table options a shared migration names
// through its template fields.
type Types struct {
	// BigInt is a 64-bit integer: INTEGER in SQLite, BIGINT in PostgreSQL.
	BigInt string
	// Bool is a boolean: INTEGER (0 or 1) in SQLite, BOOLEAN in
	// PostgreSQL; True and False are its literals.
	Bool, True, False string
	// Bytes is a byte string: BLOB in SQLite, BYTEA in PostgreSQL.
	Bytes string
	// Serial is an auto-numbered 64-bit primary key column type.
	Serial string
	// Strict ends a CREATE TABLE: " STRICT" in SQLite, "" in PostgreSQL.
	Strict string
}

// Migrate applies, once each and in name order (by file name across both
// sets), the backend's own migrations in backendFS ("migrations/*.sql")
// and the shared ones, in one write transaction, recording each in
// schema_migrations: a backend migration under its path, as before, a
// shared one as "shared/NAME". The dialect's Serialize makes concurrent
// migrators (several processes starting at once) take turns.
func Migrate(ctx context.Context, b Backend, backendFS fs.FS) error {
	return migrate(ctx, b, backendFS, migrationFS)
}

func migrate(ctx context.Context, b Backend, backendFS, sharedFS fs.FS) error {
	d := b.Dialect()
	type migration struct {
		record, base string
		body         func() (string, error)
	}
	var all []migration
	own, err := fs.Glob(backendFS, "migrations/*.sql")
	if err != nil {
		return err
	}
	for _, name := range own {
		all = append(all, migration{record: name, base: path.Base(name), body: func() (string, error) {
			b, err := fs.ReadFile(backendFS, name)
			return string(b), err
		}})
	}
	shared, err := fs.Glob(sharedFS, "migrations/*.sql")
	if err != nil {
		return err
	}
	for _, name := range shared {
		all = append(all, migration{record: "shared/" + path.Base(name), base: path.Base(name), body: func() (string, error) {
			return expand(sharedFS, name, d.Types)
		}})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].base < all[j].base })
	for i := 1; i < len(all); i++ {
		if all[i].base == all[i-1].base {
			return fmt.Errorf("%s: two migrations named %s", d.Name, all[i].base)
		}
	}
	return b.Write(ctx, func(q Querier) error {
		if d.Serialize != nil {
			if err := d.Serialize(ctx, q, "migrations"); err != nil {
				return err
			}
		}
		if _, err := q.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)`); err != nil {
			return err
		}
		for _, m := range all {
			var n int
			if err := q.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE name = $1`, m.record).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			body, err := m.body()
			if err != nil {
				return err
			}
			if err := script(ctx, q, body); err != nil {
				return fmt.Errorf("%s: migration %s: %w", d.Name, m.record, err)
			}
			if _, err := q.Exec(ctx, `INSERT INTO schema_migrations (name) VALUES ($1)`, m.record); err != nil {
				return err
			}
		}
		return nil
	})
}

// Scripter is a Querier's optional capability of running several
// statements at once, for a driver whose Exec cannot (SQLite's returns no
// result for them).
type Scripter interface {
	Script(ctx context.Context, sql string) error
}

// script runs a migration's statements.
func script(ctx context.Context, q Querier, sql string) error {
	if s, ok := q.(Scripter); ok {
		return s.Script(ctx, sql)
	}
	_, err := q.Exec(ctx, sql)
	return err
}

// fields names each of t's types (a test checks that it lists every
// field of Types).
func (t Types) fields() map[string]string {
	return map[string]string{
		"BigInt": t.BigInt, "Bool": t.Bool, "True": t.True, "False": t.False,
		"Bytes": t.Bytes, "Serial": t.Serial, "Strict": t.Strict,
	}
}

// expand renders a shared migration for the dialect's types: each
// {{.Field}} is replaced by that field of t, and a field that Types lacks
// is an error, not an empty string. (Plain replacement, not text/template:
// text/template's reflective method calls make the linker keep every
// exported method of every type in the program, 6 MB in an embedding
// binary.)
func expand(fsys fs.FS, name string, t Types) (string, error) {
	src, err := fs.ReadFile(fsys, name)
	if err != nil {
		return "", err
	}
	fields := t.fields()
	var out strings.Builder
	rest := string(src)
	for {
		before, after, ok := strings.Cut(rest, "{{")
		out.WriteString(before)
		if !ok {
			break
		}
		field, tail, ok := strings.Cut(after, "}}")
		if !ok {
			return "", fmt.Errorf("migration %s: unclosed {{", name)
		}
		v, known := fields[strings.TrimPrefix(strings.TrimSpace(field), ".")]
		if !known || !strings.HasPrefix(strings.TrimSpace(field), ".") {
			return "", fmt.Errorf("migration %s: unknown type {{%s}}", name, field)
		}
		out.WriteString(v)
		rest = tail
	}
	return strings.TrimSpace(out.String()), nil
}
