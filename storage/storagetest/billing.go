package storagetest

import "testing"

// TestLedger is a placeholder until the ledger suite lands.
func TestLedger(t *testing.T, f Factory) { t.Fatal("ledger suite not written yet") }

// TestPointsStore is a placeholder until the points suite lands.
func TestPointsStore(t *testing.T, f Factory) { t.Fatal("points suite not written yet") }

// TestSubscriptionStore is a placeholder until the subscription suite lands.
func TestSubscriptionStore(t *testing.T, f Factory) { t.Fatal("subscription suite not written yet") }
