package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

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
		return fmt.Errorf("sqlite: put release: %w", err)
	}
	err = s.write(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO releases (version, notes, downloads, published_at) VALUES (?, ?, ?, ?)
			 ON CONFLICT (version) DO UPDATE SET
			   notes = excluded.notes, downloads = excluded.downloads, published_at = excluded.published_at`,
			r.Version, r.Notes, string(js), r.PublishedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: put release: %w", err)
	}
	return nil
}

// GetRelease returns the release with this exact version, or fault.NotFound.
func (s *Store) GetRelease(ctx context.Context, version string) (release.Release, error) {
	r, err := scanRelease(s.read().QueryRowContext(ctx,
		`SELECT version, notes, downloads, published_at FROM releases WHERE version = ?`, version))
	if errors.Is(err, sql.ErrNoRows) {
		return release.Release{}, fault.New(fault.NotFound, "release not found")
	}
	if err != nil {
		return release.Release{}, fmt.Errorf("sqlite: get release: %w", err)
	}
	return r, nil
}

// ListReleases returns every release, ordered by version text.
func (s *Store) ListReleases(ctx context.Context) ([]release.Release, error) {
	rows, err := s.read().QueryContext(ctx,
		`SELECT version, notes, downloads, published_at FROM releases ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list releases: %w", err)
	}
	defer rows.Close()
	all := []release.Release{}
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list releases: %w", err)
		}
		all = append(all, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list releases: %w", err)
	}
	return all, nil
}

// scanRelease reads one release row; downloads come back as a non-nil slice.
func scanRelease(row interface{ Scan(...any) error }) (release.Release, error) {
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
