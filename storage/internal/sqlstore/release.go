package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/release"
)

// Releases is release.Store over a Backend.
type Releases struct {
	B Backend
}

var _ release.Store = Releases{}

// PutRelease inserts or replaces the release with r.Version. Nil downloads
// are stored as an empty list.
func (s Releases) PutRelease(ctx context.Context, r release.Release) error {
	d := s.B.Dialect()
	downloads := r.Downloads
	if downloads == nil {
		downloads = []string{}
	}
	js, err := json.Marshal(downloads)
	if err != nil {
		return d.wrap("put release", err)
	}
	err = s.B.Write(ctx, func(q Querier) error {
		_, err := q.Exec(ctx,
			`INSERT INTO releases (version, notes, downloads, published_at) VALUES ($1, $2, $3, $4)
			 ON CONFLICT (version) DO UPDATE SET
			   notes = excluded.notes, downloads = excluded.downloads, published_at = excluded.published_at`,
			r.Version, r.Notes, string(js), r.PublishedAt)
		return err
	})
	if err != nil {
		return d.wrap("put release", err)
	}
	return nil
}

// GetRelease returns the release with this exact version, or fault.NotFound.
func (s Releases) GetRelease(ctx context.Context, version string) (release.Release, error) {
	d := s.B.Dialect()
	r, err := scanRelease(s.B.Read().QueryRow(ctx,
		`SELECT version, notes, downloads, published_at FROM releases WHERE version = $1`, version))
	if d.NoRows(err) {
		return release.Release{}, fault.New(fault.NotFound, "release not found")
	}
	if err != nil {
		return release.Release{}, d.wrap("get release", err)
	}
	return r, nil
}

// ListReleases returns every release, ordered by the bytes of the version.
func (s Releases) ListReleases(ctx context.Context) ([]release.Release, error) {
	d := s.B.Dialect()
	rows, err := s.B.Read().Query(ctx,
		`SELECT version, notes, downloads, published_at FROM releases ORDER BY version`+d.Binary)
	if err != nil {
		return nil, d.wrap("list releases", err)
	}
	defer rows.Close()
	all := []release.Release{}
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			return nil, d.wrap("list releases", err)
		}
		all = append(all, r)
	}
	if err := rows.Err(); err != nil {
		return nil, d.wrap("list releases", err)
	}
	return all, nil
}

// scanRelease reads one release row; downloads come back as a non-nil slice.
func scanRelease(row Row) (release.Release, error) {
	var r release.Release
	var js string
	if err := row.Scan(&r.Version, &r.Notes, &js, &r.PublishedAt); err != nil {
		return release.Release{}, err
	}
	if err := json.Unmarshal([]byte(js), &r.Downloads); err != nil {
		return release.Release{}, fmt.Errorf("release %s: downloads: %w", r.Version, err)
	}
	if r.Downloads == nil {
		r.Downloads = []string{}
	}
	return r, nil
}
