package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/release"
)

// fileConfig is the -config file: JSON, every field optional.
//
//	{
//	  "version": "1.2.6",
//	  "releases": [{"version": "1.2.6", "release_notes": "...", "downloads": ["https://..."], "published_at": 1748000000}]
//	}
type fileConfig struct {
	Version  string        `json:"version"`
	Releases []releaseJSON `json:"releases"`
}

type releaseJSON struct {
	Version      string   `json:"version"`
	ReleaseNotes string   `json:"release_notes"`
	Downloads    []string `json:"downloads"`
	PublishedAt  int64    `json:"published_at"`
}

func loadConfig(path string) (fileConfig, error) {
	var c fileConfig
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func (c fileConfig) platformConfig() (perceptron.Config, error) {
	pc := perceptron.Config{Version: c.Version}
	for _, r := range c.Releases {
		pc.Releases = append(pc.Releases, release.Release{
			Version: r.Version, Notes: r.ReleaseNotes, Downloads: r.Downloads, PublishedAt: r.PublishedAt,
		})
	}
	return pc, nil
}

// redactDSN hides a database URL's password for logs.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dsn
}
