package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/release"
)

var _ release.Store = (*Store)(nil)

// PutRelease inserts or replaces the release with r.Version. Nil downloads
// are stored as an empty list.
func (s *Store) PutRelease(ctx context.Context, r release.Release) error {
	downloads := r.Downloads
	if downloads == nil {
		downloads = []string{}
	}
	js, err := json.Marshal(downloads)
	if err != nil {
		return fmt.Errorf("postgres: put release: %w", err)
	}
	_, err = s.pool.Exec(ctx,
		`INSERT INTO releases (version, notes, downloads, published_at) VALUES ($1, $2, $3, $4)
		 ON CONFLICT (version) DO UPDATE SET
		   notes = excluded.notes, downloads = excluded.downloads, published_at = excluded.published_at`,
		r.Version, r.Notes, string(js), r.PublishedAt)
	if err != nil {
		return fmt.Errorf("postgres: put release: %w", err)
	}
	return nil
}

// GetRelease returns the release with this exact version, or fault.NotFound.
func (s *Store) GetRelease(ctx context.Context, version string) (release.Release, error) {
	r, err := scanRelease(s.pool.QueryRow(ctx,
		`SELECT version, notes, downloads, published_at FROM releases WHERE version = $1`, version))
	if errors.Is(err, pgx.ErrNoRows) {
		return release.Release{}, fault.New(fault.NotFound, "release not found")
	}
	if err != nil {
		return release.Release{}, fmt.Errorf("postgres: get release: %w", err)
	}
	return r, nil
}

// ListReleases returns every release, ordered by version text.
func (s *Store) ListReleases(ctx context.Context) ([]release.Release, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT version, notes, downloads, published_at FROM releases ORDER BY version COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list releases: %w", err)
	}
	defer rows.Close()
	all := []release.Release{}
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list releases: %w", err)
		}
		all = append(all, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list releases: %w", err)
	}
	return all, nil
}

// scanRelease reads one release row; downloads come back as a non-nil slice.
func scanRelease(row pgx.Row) (release.Release, error) {
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
