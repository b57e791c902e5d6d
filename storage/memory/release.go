package memory

import (
	"context"
	"slices"
	"strings"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/release"
)

var _ release.Store = (*Store)(nil)

// copyRelease returns r with its own, non-nil copy of the downloads.
func copyRelease(r release.Release) release.Release {
	d := make([]string, len(r.Downloads))
	copy(d, r.Downloads)
	r.Downloads = d
	return r
}

// PutRelease inserts or replaces the release with r.Version.
func (s *Store) PutRelease(_ context.Context, r release.Release) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releases[r.Version] = copyRelease(r)
	return nil
}

// GetRelease returns the release with this exact version, or fault.NotFound.
func (s *Store) GetRelease(_ context.Context, version string) (release.Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.releases[version]
	if !ok {
		return release.Release{}, fault.New(fault.NotFound, "release not found")
	}
	return copyRelease(r), nil
}

// ListReleases returns every release, ordered by version text.
func (s *Store) ListReleases(_ context.Context) ([]release.Release, error) {
	s.mu.Lock()
	all := make([]release.Release, 0, len(s.releases))
	for _, r := range s.releases {
		all = append(all, copyRelease(r))
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b release.Release) int { return strings.Compare(a.Version, b.Version) })
	return all, nil
}
