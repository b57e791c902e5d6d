package storagetest

import "testing"

// TestAuthStore is a placeholder until the auth store suite lands.
func TestAuthStore(t *testing.T, f Factory) { t.Fatal("auth store suite not written yet") }

// TestReleaseStore is a placeholder until the release store suite lands.
func TestReleaseStore(t *testing.T, f Factory) { t.Fatal("release store suite not written yet") }
