package httpserver_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
)

// Every domain endpoint, its fields, and each documented error by status
// and message.
func TestDomainEndpoints(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	a := e.newAgent(t, billing.FromCents(100))
	b := e.newAgent(t, billing.FromCents(100))
	broke := e.newAgent(t, 0)
	poor := e.newAgent(t, billing.FromCents(5))

	e.expectError(402, "no account found, purchase credits first", "POST", "/api/domains/reserve", broke.key, map[string]string{"subdomain": "myapp"})
	e.expectError(402, "insufficient credits for domain reservation", "POST", "/api/domains/reserve", poor.key, map[string]string{"subdomain": "myapp"})
	for sub, msg := range map[string]string{
		"a":                     "subdomain must be at least 2 characters",
		strings.Repeat("x", 33): "subdomain must be at most 32 characters",
		"My-App":                "subdomain may contain only lowercase letters, digits and hyphens, and may not start or end with a hyphen",
		"-app":                  "subdomain may contain only lowercase letters, digits and hyphens, and may not start or end with a hyphen",
		"app-":                  "subdomain may contain only lowercase letters, digits and hyphens, and may not start or end with a hyphen",
		"my_app":                "subdomain may contain only lowercase letters, digits and hyphens, and may not start or end with a hyphen",
		"my.app":                "subdomain may contain only lowercase letters, digits and hyphens, and may not start or end with a hyphen",
		"www":                   "www is a reserved subdomain",
		"staging":               "staging is a reserved subdomain",
		"":                      "subdomain is required",
	} {
		e.expectError(400, msg, "POST", "/api/domains/reserve", a.key, map[string]string{"subdomain": sub})
	}
	e.expectError(400, "subdomain is required", "POST", "/api/domains/reserve", a.key, map[string]any{})
	e.expectError(400, "invalid JSON body", "POST", "/api/domains/reserve", a.key, "{")
	e.expectError(401, "missing bearer token", "POST", "/api/domains/reserve", "", map[string]string{"subdomain": "myapp"})

	st, r := e.call("POST", "/api/domains/reserve", a.key, map[string]string{"subdomain": "myapp"})
	require.Equal(t, 200, st, "%v", r)
	id := r["id"].(string)
	require.Equal(t, "myapp", r["subdomain"])
	require.Equal(t, "myapp.pct.site", r["full_domain"])
	require.Equal(t, 10.0, r["hourly_cost_cents"])
	require.Equal(t, float64(e.clock.Now().Add(3600e9).Unix()), r["prepaid_until"])
	require.Equal(t, int64(90), e.balanceCents(a.key), "the first hour is charged at once")
	h := e.history(a.key)
	require.Equal(t, "Domain", h[0].TxType)
	require.Equal(t, int64(-10), h[0].Amount)

	e.expectError(409, "myapp.pct.site is already reserved", "POST", "/api/domains/reserve", b.key, map[string]string{"subdomain": "myapp"})
	e.expectError(409, "myapp.pct.site is already reserved", "POST", "/api/domains/reserve", a.key, map[string]string{"subdomain": "myapp"})
	require.Equal(t, int64(100), e.balanceCents(b.key), "losing costs nothing")

	st, l := e.call("GET", "/api/domains", a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, "pct.site", l["base_domain"])
	require.Equal(t, 10.0, l["hourly_cost_cents"])
	require.Equal(t, []any{10000.0, 10099.0}, l["port_range"])
	ds := l["domains"].([]any)
	require.Len(t, ds, 1)
	d := ds[0].(map[string]any)
	require.Equal(t, id, d["id"])
	require.Equal(t, "myapp.pct.site", d["full_domain"])
	require.Equal(t, "domain-"+strings.ReplaceAll(id, "-", "")[:8], d["service_id"])
	require.Equal(t, float64(e.clock.Now().Unix()), d["created_at"])
	require.Nil(t, d["local_port"])
	require.Contains(t, d, "local_port", "null, not missing")
	require.Equal(t, false, d["tunnel_active"])
	st, l = e.call("GET", "/api/domains", a.master, nil)
	require.Equal(t, 200, st, "a master key works too")
	require.Len(t, l["domains"], 1)
	st, l = e.call("GET", "/api/domains", b.key, nil)
	require.Equal(t, 200, st)
	require.Empty(t, l["domains"])

	st, g := e.call("GET", "/api/domains/"+id, a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, d, g)
	e.expectError(403, "you do not own this domain", "GET", "/api/domains/"+id, b.key, nil)
	e.expectError(404, "domain not found", "GET", "/api/domains/d1e2f3a4-0000-0000-0000-000000000000", a.key, nil)

	e.expectError(400, "assign a port before connecting the tunnel", "POST", "/api/domains/"+id+"/tunnel-token", a.key, nil)
	for _, port := range []any{9999, 10100, 0, -1, 70000} {
		e.expectError(400, "port must be between 10000 and 10099", "POST", "/api/domains/"+id+"/assign", a.key, map[string]any{"port": port})
	}
	e.expectError(400, "port must be between 10000 and 10099", "POST", "/api/domains/"+id+"/assign", a.key, map[string]any{})
	e.expectError(403, "you do not own this domain", "POST", "/api/domains/"+id+"/assign", b.key, map[string]any{"port": 10001})
	st, as := e.call("POST", "/api/domains/"+id+"/assign", a.key, map[string]any{"port": 10001})
	require.Equal(t, 200, st, "%v", as)
	require.Equal(t, map[string]any{"status": "assigned", "port": 10001.0}, as)
	_, g = e.call("GET", "/api/domains/"+id, a.key, nil)
	require.Equal(t, 10001.0, g["local_port"])

	st, r2 := e.call("POST", "/api/domains/reserve", a.key, map[string]string{"subdomain": "other"})
	require.Equal(t, 200, st)
	id2 := r2["id"].(string)
	e.expectError(409, "port 10001 is already assigned to myapp.pct.site", "POST", "/api/domains/"+id2+"/assign", a.key, map[string]any{"port": 10001})
	// Another wallet may use the same port.
	st, r3 := e.call("POST", "/api/domains/reserve", b.key, map[string]string{"subdomain": "bee"})
	require.Equal(t, 200, st)
	st, _ = e.call("POST", "/api/domains/"+r3["id"].(string)+"/assign", b.key, map[string]any{"port": 10001})
	require.Equal(t, 200, st)

	st, tk := e.call("POST", "/api/domains/"+id+"/tunnel-token", a.key, nil)
	require.Equal(t, 200, st, "%v", tk)
	require.Equal(t, "myapp", tk["subdomain"])
	require.Equal(t, 10001.0, tk["local_port"])
	require.Equal(t, float64(e.clock.Now().Add(300e9).Unix()), tk["expires_at"], "valid 5 minutes")
	require.True(t, strings.HasPrefix(tk["tunnel_token"].(string), "eyJ"), "a JWT")
	e.expectError(403, "you do not own this domain", "POST", "/api/domains/"+id+"/tunnel-token", b.key, nil)

	e.expectError(403, "you do not own this domain", "POST", "/api/domains/"+id+"/unassign", b.key, nil)
	st, un := e.call("POST", "/api/domains/"+id+"/unassign", a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, map[string]any{"status": "unassigned"}, un)
	e.expectError(400, "assign a port before connecting the tunnel", "POST", "/api/domains/"+id+"/tunnel-token", a.key, nil)
	st, _ = e.call("POST", "/api/domains/"+id2+"/assign", a.key, map[string]any{"port": 10001})
	require.Equal(t, 200, st, "10001 is free again")

	e.expectError(403, "you do not own this domain", "POST", "/api/domains/release", b.key, map[string]string{"domain_id": id})
	e.expectError(404, "domain not found", "POST", "/api/domains/release", a.key, map[string]string{"domain_id": "nope"})
	e.expectError(400, "domain_id is required", "POST", "/api/domains/release", a.key, map[string]string{})
	before := e.balanceCents(a.key)
	st, rel := e.call("POST", "/api/domains/release", a.key, map[string]string{"domain_id": id})
	require.Equal(t, 200, st)
	require.Equal(t, map[string]any{"status": "released"}, rel)
	require.Equal(t, before, e.balanceCents(a.key), "no refund")
	e.expectError(404, "domain not found", "GET", "/api/domains/"+id, a.key, nil)
	e.expectError(404, "domain not found", "POST", "/api/domains/release", a.key, map[string]string{"domain_id": id})
	_, l = e.call("GET", "/api/domains", a.key, nil)
	require.Len(t, l["domains"], 1)
	// Free at once: b takes it.
	st, _ = e.call("POST", "/api/domains/reserve", b.key, map[string]string{"subdomain": "myapp"})
	require.Equal(t, 200, st)

	// Points: domain_active for the first hour.
	_, pts := e.call("GET", "/api/points/history", a.key, nil)
	found := false
	for _, tx := range pts["transactions"].([]any) {
		if tx.(map[string]any)["trigger_type"] == "domain_active" {
			found = true
		}
	}
	require.True(t, found, "%v", pts)
}
