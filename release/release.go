// Package release serves the release records behind GET /api/version/latest
// and GET /api/version/{version}.
//
// The operator configures releases (the reference server reads them from
// its config file, and -dev seeds one for the running version). "Latest"
// is the release with the highest semantic version (SemVer 2.0.0
// precedence, pre-releases below their release), not the newest row.
package release

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Release is one published version.
type Release struct {
	// Version is the semantic version, without a leading "v".
	Version string
	// Notes is raw Markdown.
	Notes string
	// Downloads are per-platform tarball URLs.
	Downloads []string
	// PublishedAt is Unix seconds.
	PublishedAt int64
}

// Store keeps releases.
type Store interface {
	// PutRelease inserts or replaces the release with r.Version.
	PutRelease(ctx context.Context, r Release) error
	// GetRelease returns the release with this exact version, or fault.NotFound.
	GetRelease(ctx context.Context, version string) (Release, error)
	// ListReleases returns every release, in no particular order.
	ListReleases(ctx context.Context) ([]Release, error)
}

// Service answers release queries.
type Service struct{ store Store }

// NewService returns a service over store.
func NewService(store Store) *Service { return &Service{store: store} }

// Put validates r's version and stores it.
func (s *Service) Put(ctx context.Context, r Release) error {
	r.Version = strings.TrimPrefix(r.Version, "v")
	if _, err := Parse(r.Version); err != nil {
		return err
	}
	if r.Downloads == nil {
		r.Downloads = []string{}
	}
	return s.store.PutRelease(ctx, r)
}

// Latest returns the release with the highest semantic version.
func (s *Service) Latest(ctx context.Context) (Release, error) {
	all, err := s.store.ListReleases(ctx)
	if err != nil {
		return Release{}, err
	}
	var best Release
	var bestV Version
	found := false
	for _, r := range all {
		v, err := Parse(r.Version)
		if err != nil {
			continue
		}
		if !found || v.Compare(bestV) > 0 {
			best, bestV, found = r, v, true
		}
	}
	if !found {
		return Release{}, fault.New(fault.NotFound, "no releases found")
	}
	return best, nil
}

// Get returns the release with this version.
func (s *Service) Get(ctx context.Context, version string) (Release, error) {
	r, err := s.store.GetRelease(ctx, strings.TrimPrefix(version, "v"))
	if fault.CodeOf(err) == fault.NotFound {
		return Release{}, fault.Wrap(err, fault.NotFound, fmt.Sprintf("release '%s' not found", version))
	}
	return r, err
}

// Version is a parsed semantic version.
type Version struct {
	Major, Minor, Patch uint64
	Pre                 []string
}

// Parse parses "MAJOR.MINOR.PATCH[-PRE][+BUILD]".
func Parse(s string) (Version, error) {
	bad := fault.Newf(fault.Invalid, "invalid semantic version %q", s)
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	var v Version
	core := s
	if i := strings.IndexByte(s, '-'); i >= 0 {
		core = s[:i]
		if s[i+1:] == "" {
			return v, bad
		}
		v.Pre = strings.Split(s[i+1:], ".")
		for _, p := range v.Pre {
			if p == "" {
				return v, bad
			}
		}
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return v, bad
	}
	nums := [3]*uint64{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		if p == "" || (len(p) > 1 && p[0] == '0') {
			return v, bad
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return v, bad
		}
		*nums[i] = n
	}
	return v, nil
}

// Compare returns -1, 0 or 1 by SemVer precedence.
func (v Version) Compare(w Version) int {
	for _, d := range [][2]uint64{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(v.Pre) == 0 && len(w.Pre) == 0:
		return 0
	case len(v.Pre) == 0:
		return 1
	case len(w.Pre) == 0:
		return -1
	}
	for i := 0; i < len(v.Pre) && i < len(w.Pre); i++ {
		a, b := v.Pre[i], w.Pre[i]
		an, aerr := strconv.ParseUint(a, 10, 64)
		bn, berr := strconv.ParseUint(b, 10, 64)
		switch {
		case aerr == nil && berr == nil:
			if an != bn {
				if an < bn {
					return -1
				}
				return 1
			}
		case aerr == nil:
			return -1
		case berr == nil:
			return 1
		default:
			if c := strings.Compare(a, b); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(v.Pre) < len(w.Pre):
		return -1
	case len(v.Pre) > len(w.Pre):
		return 1
	}
	return 0
}
