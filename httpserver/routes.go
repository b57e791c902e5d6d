package httpserver

// routes lists the whole API in one place.
func (s *server) routes() {
	m := s.mux

	// Health and version: no auth.
	m.HandleFunc("GET /api/health", s.health)
	m.HandleFunc("GET /api/version/latest", s.latestVersion)
	m.HandleFunc("GET /api/version/{version}", s.version)

	// Wallet login.
	m.HandleFunc("GET /api/auth/challenge", s.limited("auth", s.challenge))
	m.HandleFunc("POST /api/auth/verify", s.limited("auth", s.verify))
	m.Handle("POST /api/auth/regenerate-master-key", s.authed(masterOnly, s.regenerateMasterKey))

	// API keys.
	m.Handle("POST /api/keys/generate", s.authed(masterOnly, s.generateKey))
	m.Handle("GET /api/keys", s.authed(masterOnly, s.listKeys))
	m.Handle("DELETE /api/keys/{id}", s.authed(masterOnly, s.revokeKey))
	m.Handle("GET /api/metrics/keys", s.authed(masterOnly, s.keyMetrics))

	// Credits and points.
	m.Handle("GET /api/credits/balance", s.authed(anyKey, s.creditBalance))
	m.Handle("GET /api/credits/history", s.authed(anyKey, s.creditHistory))
	m.HandleFunc("GET /api/credits/receiving-address", s.receivingAddress)
	m.Handle("POST /api/credits/purchase", s.authed(anyKey, s.purchase))
	m.Handle("GET /api/points/balance", s.authed(anyKey, s.pointsBalance))
	m.Handle("GET /api/points/history", s.authed(anyKey, s.pointsHistory))

	// Metrics.
	m.Handle("GET /api/metrics/summary", s.authed(masterOnly, s.metricsSummary))
	m.Handle("GET /api/metrics/history", s.authed(masterOnly, s.metricsHistory))

	// Inference: OpenAI-compatible under /api/v1 and /api.
	m.HandleFunc("GET /api/models", s.models)
	m.HandleFunc("GET /api/v1/models", s.models)
	m.Handle("POST /api/v1/chat/completions", s.authed(anyKey, s.chatCompletions))
	m.Handle("POST /api/chat/completions", s.authed(anyKey, s.chatCompletions))
	m.Handle("POST /api/v1/audio/transcriptions", s.authed(anyKey, s.transcriptions))
	m.Handle("POST /api/audio/transcriptions", s.authed(anyKey, s.transcriptions))

	// Domains and their tunnels (when the store keeps domains).
	if s.p.Domains != nil {
		m.Handle("POST /api/domains/reserve", s.authed(anyKey, s.reserveDomain))
		m.Handle("GET /api/domains", s.authed(anyKey, s.listDomains))
		m.Handle("GET /api/domains/{id}", s.authed(anyKey, s.getDomain))
		m.Handle("POST /api/domains/{id}/assign", s.authed(anyKey, s.assignDomain))
		m.Handle("POST /api/domains/{id}/unassign", s.authed(anyKey, s.unassignDomain))
		m.Handle("POST /api/domains/{id}/tunnel-token", s.authed(anyKey, s.tunnelToken))
		m.Handle("POST /api/domains/release", s.authed(anyKey, s.releaseDomain))
		m.HandleFunc("GET /api/domains/tunnel", s.connectTunnel)
	}

	// The news feed (when the store keeps feeds).
	if s.p.Feeds != nil {
		m.Handle("POST /api/feeds/news/subscribe", s.authed(anyKey, s.feedSubscribe))
		m.Handle("POST /api/feeds/news/unsubscribe", s.authed(anyKey, s.feedUnsubscribe))
		m.Handle("GET /api/feeds/news", s.authed(anyKey, s.feedItems))
		m.HandleFunc("GET /api/feeds/news/categories", s.feedCategories)
		m.Handle("GET /api/feeds/news/status", s.authed(anyKey, s.feedStatus))
		m.Handle("GET /api/feeds/news/{id}", s.authed(anyKey, s.feedItem))
	}

	// Personas (when the store keeps them): client keys only.
	if s.p.Personas != nil {
		m.HandleFunc("GET /api/personas/personalities", s.personalities)
		m.Handle("GET /api/personas", s.authed(clientOnly, s.listPersonas))
		m.Handle("POST /api/personas/new", s.authed(clientOnly, s.newPersona))
		m.Handle("GET /api/personas/{id}", s.authed(clientOnly, s.getPersona))
		m.Handle("DELETE /api/personas/{id}", s.authed(clientOnly, s.deletePersona))
		m.Handle("GET /api/personas/{id}/sessions", s.authed(clientOnly, s.listSessions))
		m.Handle("POST /api/personas/{id}/sessions", s.authed(clientOnly, s.newSession))
		m.Handle("DELETE /api/personas/{id}/sessions/{sid}", s.authed(clientOnly, s.deleteSession))
		m.Handle("GET /api/personas/{id}/sessions/{sid}/messages", s.authed(clientOnly, s.listMessages))
		m.Handle("POST /api/personas/{id}/sessions/{sid}/messages/new", s.authed(clientOnly, s.newMessage))
		m.HandleFunc("GET /api/personas/{id}/sessions/{sid}/stream", s.personaStream)
		m.Handle("GET /api/personas/{id}/files", s.authed(clientOnly, s.listFiles))
		m.Handle("GET /api/personas/{id}/files/{name}", s.authed(clientOnly, s.getFile))
		m.Handle("PUT /api/personas/{id}/files/{name}", s.authed(clientOnly, s.putFile))
		m.Handle("DELETE /api/personas/{id}/files/{name}", s.authed(clientOnly, s.deleteFile))
	}

	// Wallet.
	m.Handle("GET /api/wallet/addresses", s.authed(anyKey, s.walletAddress))

	// The offline development chain, only in Dev mode.
	if s.p.DevChain != nil {
		m.Handle("POST /devnet/rpc", s.p.DevChain.RPCHandler())
		m.HandleFunc("GET /devnet/info", s.devnetInfo)
		m.HandleFunc("POST /devnet/faucet", s.limited("faucet", s.devnetFaucet))
	}
}
