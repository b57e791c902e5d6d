package sqlstore

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

// fakeBackend records the statements a migration runs; schema_migrations
// is a set of names.
type fakeBackend struct {
	applied map[string]bool
	ran     []string
	locked  []string
}

type fakeRow struct{ n int }

func (r fakeRow) Scan(dest ...any) error { *(dest[0].(*int)) = r.n; return nil }

func (b *fakeBackend) QueryRow(_ context.Context, sql string, args ...any) Row {
	if b.applied[args[0].(string)] {
		return fakeRow{1}
	}
	return fakeRow{0}
}
func (b *fakeBackend) Query(context.Context, string, ...any) (Rows, error) {
	return nil, errors.New("no")
}
func (b *fakeBackend) Exec(_ context.Context, sql string, args ...any) (int64, error) {
	if strings.HasPrefix(sql, "INSERT INTO schema_migrations") {
		b.applied[args[0].(string)] = true
		return 1, nil
	}
	if !strings.HasPrefix(sql, "CREATE TABLE IF NOT EXISTS schema_migrations") {
		b.ran = append(b.ran, sql)
	}
	return 0, nil
}
func (b *fakeBackend) Read() Querier { return b }
func (b *fakeBackend) Write(_ context.Context, fn func(Querier) error) error {
	return fn(b)
}
func (b *fakeBackend) WriteRelaxed(ctx context.Context, fn func(Querier) error) error {
	return b.Write(ctx, fn)
}
func (b *fakeBackend) Dialect() Dialect {
	return Dialect{Name: "fake", Types: Types{BigInt: "BIGINT", Bool: "BOOLEAN", True: "true", False: "false", Strict: ""},
		Serialize: func(_ context.Context, _ Querier, scope string) error { b.locked = append(b.locked, scope); return nil }}
}

// Shared migrations are expanded for the dialect and applied in file-name
// order with the backend's own, each once, under the migrators' lock.
func TestMigrateOrdersExpandsAndRecords(t *testing.T) {
	own := fstest.MapFS{
		"migrations/0000_init.sql": {Data: []byte("CREATE TABLE a (x INTEGER)")},
		"migrations/0002_b.sql":    {Data: []byte("CREATE TABLE b (x INTEGER)")},
	}
	shared := fstest.MapFS{
		"migrations/0001_s.sql": {Data: []byte("CREATE TABLE s (n {{.BigInt}} NOT NULL, ok {{.Bool}} DEFAULT {{.False}}){{.Strict}}")},
		"migrations/README.md":  {Data: []byte("not a migration")},
	}
	b := &fakeBackend{applied: map[string]bool{"migrations/0000_init.sql": true}}
	require.NoError(t, migrate(context.Background(), b, own, shared))
	require.Equal(t, []string{"CREATE TABLE s (n BIGINT NOT NULL, ok BOOLEAN DEFAULT false)", "CREATE TABLE b (x INTEGER)"}, b.ran)
	require.True(t, b.applied["shared/0001_s.sql"])
	require.Equal(t, []string{"migrations"}, b.locked)

	b.ran = nil
	require.NoError(t, migrate(context.Background(), b, own, shared))
	require.Empty(t, b.ran, "each once")

	shared["migrations/0003_bad.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE t (x {{.Nope}})")}
	require.ErrorContains(t, migrate(context.Background(), b, own, shared), "Nope", "an unknown type is an error, not an empty string")
	delete(shared, "migrations/0003_bad.sql")
	shared["migrations/0002_b.sql"] = &fstest.MapFile{Data: []byte("x")}
	require.ErrorContains(t, migrate(context.Background(), b, own, shared), "two migrations named 0002_b.sql")
}

// Every field of Types can be used in a shared migration.
func TestTypesFieldsListsEveryField(t *testing.T) {
	rt := reflect.TypeFor[Types]()
	var v Types
	rv := reflect.ValueOf(&v).Elem()
	for i := range rt.NumField() {
		rv.Field(i).SetString("value of " + rt.Field(i).Name)
	}
	fields := v.fields()
	require.Len(t, fields, rt.NumField())
	for i := range rt.NumField() {
		require.Equal(t, "value of "+rt.Field(i).Name, fields[rt.Field(i).Name])
	}
	fsys := fstest.MapFS{"m.sql": {Data: []byte("CREATE TABLE t (a {{.BigInt}}, b {{ .Bool }}){{.Strict}}")}}
	got, err := expand(fsys, "m.sql", v)
	require.NoError(t, err)
	require.Equal(t, "CREATE TABLE t (a value of BigInt, b value of Bool)value of Strict", got)
	for _, bad := range []string{"{{.Nope}}", "{{BigInt}}", "a {{.BigInt"} {
		_, err := expand(fstest.MapFS{"m.sql": {Data: []byte(bad)}}, "m.sql", v)
		require.Error(t, err, bad)
	}
}
