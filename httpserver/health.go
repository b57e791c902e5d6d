package httpserver

import (
	"net/http"

	"github.com/perceptron-cloud/perceptron/release"
)

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status":         "ok",
		"version":        s.p.Version(),
		"uptime_seconds": int64(s.p.Uptime().Seconds()),
	})
}

type releaseJSON struct {
	Version      string   `json:"version"`
	ReleaseNotes string   `json:"release_notes"`
	Downloads    []string `json:"downloads"`
	PublishedAt  int64    `json:"published_at"`
}

func toReleaseJSON(r release.Release) releaseJSON {
	d := r.Downloads
	if d == nil {
		d = []string{}
	}
	return releaseJSON{Version: r.Version, ReleaseNotes: r.Notes, Downloads: d, PublishedAt: r.PublishedAt}
}

func (s *server) latestVersion(w http.ResponseWriter, r *http.Request) {
	rel, err := s.p.Releases.Latest(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toReleaseJSON(rel))
}

func (s *server) version(w http.ResponseWriter, r *http.Request) {
	rel, err := s.p.Releases.Get(r.Context(), r.PathValue("version"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toReleaseJSON(rel))
}
